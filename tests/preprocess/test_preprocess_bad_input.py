"""Bad input at the preprocessing stage: one clear message naming the file, the store unharmed."""

from __future__ import annotations

import gzip
import re
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from lungseg.core.errors import DataError
from lungseg.preprocess.run import run_preprocess
from lungseg.store.slices import SliceStore

from .test_run import (  # shared helpers and fixtures
    CHAIN,
    _recipe,
    assert_same_store,
    data,
    reference,
    snapshot,
)

__all__ = ["data", "reference"]  # fixtures used by the tests below


# ----------------------------------------------------------------------------- bad inputs


def _like(data: Path, case: str = "lung_001") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = nib.load(str(data / "imagesTr" / f"{case}.nii.gz"))
    label = nib.load(str(data / "labelsTr" / f"{case}.nii.gz"))
    return np.asarray(image.dataobj), np.asarray(label.dataobj), image.affine


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _bad_image(data: Path, kind: str) -> Path:
    """Adds case ``lung_900`` broken in one way; returns the file the message must name."""
    image, label, affine = _like(data)
    image_path = data / "imagesTr" / "lung_900.nii.gz"
    label_path = data / "labelsTr" / "lung_900.nii.gz"
    _save(image_path, image, affine)
    _save(label_path, label, affine)
    if kind == "garbage":
        image_path.write_bytes(b"this is not a NIfTI file")
    elif kind == "truncated":
        # a real gzip stream cut short: the header reads, the voxels do not
        blob = (data / "imagesTr" / "lung_001.nii.gz").read_bytes()
        image_path.write_bytes(blob[: len(blob) // 2])
    elif kind == "truncated-header":
        image_path.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 60))
    elif kind == "empty-file":
        image_path.write_bytes(b"")
    elif kind == "shape":
        _save(label_path, label[:, :, :-1], affine)
        return label_path
    elif kind == "affine":
        moved = affine.copy()
        moved[0, 3] += 5.0
        _save(label_path, label, moved)
        return label_path
    elif kind == "label-values":
        bad = label.copy()
        bad[0, 0, 0] = 2
        _save(label_path, bad, affine)
        return label_path
    elif kind == "2d":
        _save(image_path, image[:, :, 0], affine)
    elif kind == "4d":
        _save(image_path, np.stack([image, image], axis=3), affine)
    elif kind in ("nan", "inf"):
        floats = image.astype(np.float32)
        floats[3, 4, 20] = np.nan if kind == "nan" else np.inf
        _save(image_path, floats, affine)
    elif kind == "few-slices":
        _save(image_path, image[:, :, :8], affine)
        _save(label_path, label[:, :, :8], affine)
    else:
        raise AssertionError(kind)
    return image_path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("garbage", "not a readable NIfTI file"),
        ("truncated", "could not read the voxel data"),
        ("truncated-header", "not a readable NIfTI file"),
        ("empty-file", "not a readable NIfTI file"),
        ("shape", r"label shape \(32, 32, 39\) differs from image shape \(32, 32, 40\)"),
        ("affine", "label affine differs from the image's"),
        ("label-values", r"label values must be 0 and 1, found \[0, 1, 2\]"),
        ("2d", "expected a 3D volume, got 2D"),
        ("4d", "expected a 3D volume, got 4D"),
        ("nan", "contains NaN or infinite values"),
        ("inf", "contains NaN or infinite values"),
        ("few-slices", "has 8 slices but skip-slices drops the first 10"),
    ],
)
def test_a_bad_case_is_named_and_damages_nothing(data, tmp_path, reference, kind, message):
    path = tmp_path / "reference.zarr"  # the store the fixture filled
    named = _bad_image(data, kind)
    with pytest.raises(DataError) as info:
        run_preprocess(_recipe(data, path), workers=1, progress=False)
    text = str(info.value)
    assert "\n" not in text
    assert "1 of 1 cases failed" in text and "the others were stored" in text
    assert f"lung_900: {named}" in text
    assert len(re.findall(message, text)) == 1, text
    assert SliceStore(str(path)).cases() == [f"lung_00{i}" for i in range(1, 6)]
    assert_same_store(snapshot(path), reference)


def test_lung_crop_without_lung_is_named(data, tmp_path):
    _, label, affine = _like(data)
    solid = np.full(label.shape, 40, np.int16)  # soft tissue everywhere: no air inside a body
    _save(data / "imagesTr" / "lung_900.nii.gz", solid, affine)
    _save(data / "labelsTr" / "lung_900.nii.gz", label, affine)
    chain = [{"name": "canonical"}, {"name": "lung-crop"}, *CHAIN[2:]]
    with pytest.raises(DataError, match=r"lung_900\.nii\.gz: lung-crop found no lung"):
        run_preprocess(_recipe(data, tmp_path / "crop.zarr", chain), workers=1, progress=False)
    assert SliceStore(str(tmp_path / "crop.zarr")).cases() == [f"lung_00{i}" for i in range(1, 6)]


def test_empty_data_folder_is_named_and_the_store_untouched(data, tmp_path, reference):
    empty = tmp_path / "empty"
    (empty / "imagesTr").mkdir(parents=True)
    (empty / "labelsTr").mkdir()
    path = tmp_path / "reference.zarr"
    with pytest.raises(DataError, match=r"imagesTr holds no \.nii\.gz / \.nii images"):
        run_preprocess(_recipe(empty, path), workers=1, progress=False)
    assert_same_store(snapshot(path), reference)


def test_image_without_label_is_named_and_the_store_untouched(data, tmp_path, reference):
    image, _, affine = _like(data)
    _save(data / "imagesTr" / "lung_900.nii.gz", image, affine)
    path = tmp_path / "reference.zarr"
    with pytest.raises(DataError, match=r"imagesTr/lung_900\.nii\.gz \(no label\)"):
        run_preprocess(_recipe(data, path), workers=1, progress=False)
    assert_same_store(snapshot(path), reference)


def test_bad_cases_in_parallel_are_all_reported_and_the_rest_stored(data, tmp_path):
    _bad_image(data, "truncated")
    broken = data / "labelsTr" / "lung_003.nii.gz"
    broken.write_bytes(b"\x00" * 10)
    path = tmp_path / "par.zarr"
    with pytest.raises(DataError) as info:
        run_preprocess(_recipe(data, path), workers=2, progress=False)
    text = str(info.value)
    assert "2 of 6 cases failed" in text
    assert "lung_003: " in text and str(broken) in text and "lung_900: " in text
    assert SliceStore(str(path)).cases() == ["lung_001", "lung_002", "lung_004", "lung_005"]


def test_store_from_another_chain_is_refused_before_any_work(data, tmp_path, reference):
    path = tmp_path / "reference.zarr"
    other = [*CHAIN[:3], {"name": "resize", "size": 32}]
    with pytest.raises(DataError, match="different preprocessing chain.*--overwrite"):
        run_preprocess(_recipe(data, path, other), workers=1, progress=False)
    assert_same_store(snapshot(path), reference)
    report = run_preprocess(_recipe(data, path, other), workers=1, overwrite=True, progress=False)
    assert len(report.written) == 5
    assert zarr.open_group(str(path), mode="r")["lung_001/image"].shape == (30, 32, 32)


@pytest.mark.parametrize(
    ("stored", "scaled", "suffix"),
    [
        (np.int16, False, ".nii.gz"),
        (np.uint8, False, ".nii.gz"),
        (np.float64, False, ".nii.gz"),
        (np.uint16, True, ".nii.gz"),  # scl_slope / scl_inter: nibabel's own reader
        (np.int16, False, ".nii"),
    ],
)
def test_read_image_gives_float32_with_no_wider_temporary(tmp_path, stored, scaled, suffix):
    from lungseg.data.volume import read_image

    values = np.random.default_rng(0).integers(0, 255, (48, 40, 30)).astype(stored)
    image = nib.Nifti1Image(values, np.diag([-0.8, -0.8, 2.0, 1.0]))
    if scaled:
        image.header.set_slope_inter(0.5, -1024)
    path = tmp_path / f"ct{suffix}"
    nib.save(image, str(path))
    tracemalloc.start()
    try:
        data, geometry = read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.dtype == np.float32 and geometry.shape == (48, 40, 30)
    want = nib.load(str(path)).get_fdata(dtype=np.float32)  # scaled: float32 arithmetic here
    np.testing.assert_allclose(data, want, rtol=1e-6, atol=0)
    # the stored voxels and one float32 array; a float64 step would add 8 bytes a voxel
    assert peak < (np.dtype(stored).itemsize + 4) * values.size * 1.1 + 2**16
