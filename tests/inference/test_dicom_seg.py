"""``predict --format dicom-seg``: DICOM Segmentations on real pydicom CT series, read back."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungseg import exit_codes
from lungseg.core.errors import DataError, OutputError, RecipeError
from lungseg.data.dicom import read_dicom_series
from lungseg.inference.dicom_seg import SEGMENT_LABEL, write_dicom_seg
from lungseg.inference.predict import predict

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def write_ct_series(hu: np.ndarray, affine: np.ndarray, folder: Path, *, seed: int = 0) -> Path:
    """A CT series with pydicom: slice ``k`` of the ``(X, Y, Z)`` HU array, one file each.

    Pixel ``(row r, column c)`` of slice ``k`` is ``hu[c, r, k]``; the RAS ``affine`` gives
    each slice's ImagePositionPatient and the shared ImageOrientationPatient. The files get
    shuffled names, so their order says nothing about the slices'.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = _RAS_TO_LPS @ affine[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    names = [f"im{n:04d}.dcm" for n in random.Random(seed).sample(range(1000), hu.shape[2])]
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "P1", "Test^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_ref
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:, :3] @ [0, 0, k] + lps[:, 3]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in direction[:, :2].T.ravel()]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # rows, columns
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.ascontiguousarray((hu[:, :, k].T + 1024).astype(np.int16)).tobytes()
        ds.save_as(folder / names[k], enforce_file_format=True)
    return folder


def _oblique_affine() -> np.ndarray:
    """Rotated 30 degrees in-plane, slices running feet-ward, unequal pixel spacing."""
    t = np.deg2rad(30)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, -1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.6, 2.5])
    affine[:3, 3] = [-12.0, 30.0, 55.0]
    return affine


def _blob_series(folder: Path) -> Path:
    """An oblique 14 x 11 x 7 series whose HU hold a lopsided blob (200 HU) on 3 slices."""
    hu = np.full((14, 11, 7), -1000.0)
    hu[3:7, 2:5, 2] = 200  # columns 3..6, rows 2..4
    hu[9, 8, 3] = 200
    hu[2:4, 6:10, 5] = 200
    return write_ct_series(hu, _oblique_affine(), folder)


def _lung_series(tiny_dataset: Path, folder: Path) -> tuple[Path, Path]:
    """The tiny dataset's ``lung_006`` scan and the same scan as a DICOM series."""
    scan = tiny_dataset / "imagesTs" / "lung_006.nii.gz"
    image = nib.load(str(scan))
    hu = np.asarray(image.dataobj).astype(np.float64)
    return scan, write_ct_series(hu, image.affine, folder / "lung_006", seed=1)


def _check_seg(seg_path: Path, series: Path, expected: dict[str, np.ndarray]) -> None:
    """The SEG, read back with pydicom and highdicom, holds ``expected`` (SOP UID -> frame)."""
    sources = {}
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        sources[ds.SOPInstanceUID] = ds
    raw = pydicom.dcmread(seg_path)
    assert raw.Modality == "SEG" and raw.SegmentationType == "BINARY"
    assert raw.Manufacturer == "lungseg"
    (item,) = raw.SegmentSequence
    assert item.SegmentLabel == SEGMENT_LABEL
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "lungseg"
    series_uid = next(iter(sources.values())).SeriesInstanceUID
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert raw.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    assert raw.NumberOfFrames == len(expected)
    for frame in raw.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert uid in expected
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(position, np.asarray(sources[uid].ImagePositionPatient, float))
    seg = hd.seg.segread(seg_path)
    assert seg.get_segment_description(1).segment_label == SEGMENT_LABEL
    uids = list(expected)
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])
    for uid, got in zip(uids, pixels[..., 0], strict=True):
        np.testing.assert_array_equal(got.astype(bool), expected[uid])


def test_writer_puts_each_part_of_the_mask_on_its_source_slice(tmp_path):
    series = _blob_series(tmp_path / "series")
    image, geometry = read_dicom_series(series)
    mask = image > 0  # the blob, in the geometry predict computes masks in
    assert mask.sum() == 12 + 1 + 8
    path = write_dicom_seg(tmp_path / "out" / "s.dcm", mask, geometry.affine, series)
    expected = {}  # from each instance's own pixels: where the blob is on that slice
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        blob = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + ds.RescaleIntercept > 0
        if blob.any():
            expected[ds.SOPInstanceUID] = blob
    assert len(expected) == 3
    _check_seg(path, series, expected)
    assert not list((tmp_path / "out").glob(".partial-*"))
    # the same mask with its axes permuted and flipped (and its affine to match): same SEG
    image = nib.Nifti1Image(mask.astype(np.uint8), geometry.affine)
    turned = image.as_reoriented(np.array([[1, -1], [2, 1], [0, -1]]))
    assert turned.shape == (7, 14, 11)
    path = write_dicom_seg(tmp_path / "t.dcm", np.asarray(turned.dataobj), turned.affine, series)
    _check_seg(path, series, expected)


def test_an_empty_mask_keeps_one_blank_frame_per_slice(tmp_path):
    series = _blob_series(tmp_path / "series")
    image, geometry = read_dicom_series(series)
    path = write_dicom_seg(tmp_path / "s.dcm", image < -5000, geometry.affine, series)
    blank = {pydicom.dcmread(f).SOPInstanceUID: np.zeros((11, 14), bool) for f in series.iterdir()}
    _check_seg(path, series, blank)


def test_a_slice_off_the_grid_is_refused(tmp_path):
    series = _blob_series(tmp_path / "series")
    image, geometry = read_dicom_series(series)
    moved = geometry.affine.copy()
    moved[:3, 3] += moved[:3, 0] * 0.5  # half a voxel: no source pixel lies on this grid
    with pytest.raises(DataError, match="does not lie on the series' voxel grid"):
        write_dicom_seg(tmp_path / "s.dcm", image > 0, moved, series)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".partial-*"))


def test_a_series_a_seg_cannot_reference_gets_one_line(tmp_path):
    series = _blob_series(tmp_path / "series")
    image, geometry = read_dicom_series(series)
    for f in series.iterdir():  # a required attribute the SEG copies from its source
        ds = pydicom.dcmread(f)
        del ds.StudyInstanceUID
        ds.save_as(f)
    with pytest.raises(DataError, match="cannot make a DICOM SEG.*StudyInstanceUID") as caught:
        write_dicom_seg(tmp_path / "s.dcm", image > 0, geometry.affine, series)
    assert str(series) in str(caught.value) and "\n" not in str(caught.value)
    for f in series.iterdir():  # one without a frame of reference cannot be placed at all
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    with pytest.raises(DataError, match="has no FrameOfReferenceUID"):
        write_dicom_seg(tmp_path / "s.dcm", image > 0, geometry.affine, series)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".partial-*"))


@pytest.mark.slow
def test_predict_writes_the_seg_of_the_mask_beside_prob_and_overlay(
    tiny_trained, tiny_dataset, tmp_path
):
    _, best = tiny_trained
    _, series = _lung_series(tiny_dataset, tmp_path)
    nifti = predict(best, [series], tmp_path / "nifti", threshold=0.45)
    assert not nifti.failed, nifti.failed
    mask = np.asarray(nib.load(str(tmp_path / "nifti" / "lung_006.nii.gz")).dataobj).astype(bool)
    assert mask.any(), "threshold chosen so the mask is not empty"
    report = predict(
        best,
        [series],
        tmp_path / "seg",
        threshold=0.45,
        prob=True,
        overlay=True,
        output_format="dicom-seg",
    )
    assert not report.failed, report.failed
    assert report.written == [tmp_path / "seg" / "lung_006.dcm"]
    assert {p.name for p in report.extra} == {"lung_006_prob.nii.gz", "lung_006_overlay.png"}
    expected = {}  # slice k of the NIfTI mask is the instance numbered k + 1, rows = Y
    for f in series.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if mask[:, :, ds.InstanceNumber - 1].any():
            expected[ds.SOPInstanceUID] = mask[:, :, ds.InstanceNumber - 1].T
    _check_seg(report.written[0], series, expected)
    algorithm = pydicom.dcmread(report.written[0]).SegmentSequence[0]
    parameters = algorithm.SegmentationAlgorithmIdentificationSequence[0]
    assert "0.45" in str(parameters.AlgorithmParameters)


@pytest.mark.slow
def test_nifti_input_fails_alone_and_an_existing_seg_is_kept(tiny_trained, tiny_dataset, tmp_path):
    _, best = tiny_trained
    nifti, series = _lung_series(tiny_dataset, tmp_path / "dicom")
    out = tmp_path / "out"
    report = predict(best, [nifti, series], out, output_format="dicom-seg")
    assert list(report.failed) == [str(nifti)], report.failed
    assert "--format dicom-seg needs a DICOM series" in report.failed[str(nifti)]
    assert report.written == [out / "lung_006.dcm"]
    assert not (out / "lung_006.nii.gz").exists()
    before = pydicom.dcmread(out / "lung_006.dcm").SOPInstanceUID
    with pytest.raises(OutputError, match=r"lung_006\.dcm exists.*--overwrite"):
        predict(best, [series], out, output_format="dicom-seg")
    assert pydicom.dcmread(out / "lung_006.dcm").SOPInstanceUID == before
    again = predict(best, [series], out, output_format="dicom-seg", overwrite=True)
    assert again.written == [out / "lung_006.dcm"] and not again.failed
    assert pydicom.dcmread(out / "lung_006.dcm").SOPInstanceUID != before


@pytest.mark.slow
def test_cli_dicom_seg_names_the_nifti_input_and_writes_the_series(
    tiny_trained, tiny_dataset, tmp_path
):
    _, best = tiny_trained
    nifti, series = _lung_series(tiny_dataset, tmp_path / "dicom")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lungseg", "predict", str(nifti), str(series)]
    cmd += ["--checkpoint", str(best), "--out", str(out), "--format", "dicom-seg", "--prob"]
    result = subprocess.run(cmd, capture_output=True, encoding="utf-8", timeout=300)
    assert result.returncode == exit_codes.PARTIAL and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lungseg: error:")]
    assert len(errors) == 1 and str(nifti) in errors[0], result.stderr
    assert "--format dicom-seg needs a DICOM series" in errors[0]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "lung_006.dcm",
        "lung_006_prob.nii.gz",
    ]
    assert pydicom.dcmread(out / "lung_006.dcm").Modality == "SEG"


def test_without_highdicom_dicom_seg_fails_with_one_line_naming_the_extra(tmp_path, monkeypatch):
    series = _blob_series(tmp_path / "series")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    with pytest.raises(RecipeError, match=r"pip install 'lungseg\[dicom\]'") as caught:
        predict(tmp_path / "none.ckpt", [series], tmp_path / "out", output_format="dicom-seg")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
