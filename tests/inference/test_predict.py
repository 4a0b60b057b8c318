"""``lungseg predict``: DICOM input, optional outputs, TTA, post-processing, bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from lungseg.core import console
from lungseg.core.errors import CheckpointError
from lungseg.core.manager import load_registry
from lungseg.data.volume import read_image
from lungseg.inference.figures import PRED_COLOUR, TRUE_COLOUR, case_view
from lungseg.inference.predict import predict
from lungseg.inference.predictor import Predictor, predict_probs
from lungseg.training.checkpoint import load_checkpoint
from lungseg.training.dataset import open_store

from ..conftest import train_tiny
from .test_figures import check_contour, colour_mask, panels


def write_dicom_series(image: nib.Nifti1Image, folder: Path, uid: str) -> Path:
    """One CT series, one file per axial slice, from a NIfTI image (RAS -> LPS)."""
    folder.mkdir(parents=True, exist_ok=True)
    array = np.asarray(image.dataobj).astype(np.int16)
    lps = np.diag([-1.0, -1.0, 1.0]) @ image.affine[:3, :]
    spacing = np.sqrt((lps[:, :3] ** 2).sum(axis=0))
    direction = lps[:, :3] / spacing
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[2]):
        plane = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, k].T[None]))
        plane.SetSpacing(tuple(float(s) for s in spacing))
        plane.SetDirection(tuple(direction.ravel().tolist()))
        origin = lps[:, :3] @ np.array([0, 0, k]) + lps[:, 3]
        plane.SetOrigin(tuple(float(o) for o in origin))
        tags = {
            "0008|0060": "CT",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{o:.6f}" for o in origin),
            "0020|0037": "\\".join(f"{d:.6f}" for d in direction[:, :2].T.ravel()),
            "0018|0050": f"{spacing[2]:.6f}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


def _scan(tiny_dataset: Path) -> Path:
    return tiny_dataset / "imagesTs" / "lung_006.nii.gz"


@pytest.mark.slow
def test_dicom_series_gives_the_same_mask_as_the_nifti(tiny_trained, tiny_dataset, tmp_path):
    _, best = tiny_trained
    scan = _scan(tiny_dataset)
    write_dicom_series(nib.load(str(scan)), tmp_path / "series", "1.2.826.0.1.3680043.2.1125.1")
    report = predict(best, [tmp_path / "series", scan], tmp_path / "out", threshold=0.45)
    assert not report.failed, report.failed
    from_dicom = nib.load(str(tmp_path / "out" / "series.nii.gz"))
    from_nifti = nib.load(str(tmp_path / "out" / "lung_006.nii.gz"))
    assert from_dicom.shape == from_nifti.shape
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))
    assert np.asarray(from_nifti.dataobj).any(), "threshold chosen so the mask is not empty"


@pytest.mark.slow
def test_probability_map_overlay_and_postprocessing(tiny_trained, tiny_dataset, tmp_path):
    _, best = tiny_trained
    scan = _scan(tiny_dataset)
    report = predict(best, [scan], tmp_path, threshold=0.45, prob=True, overlay=True)
    probs = nib.load(str(tmp_path / "lung_006_prob.nii.gz"))
    mask = np.asarray(nib.load(str(tmp_path / "lung_006.nii.gz")).dataobj)
    assert probs.get_data_dtype() == np.float32 and probs.shape == mask.shape
    np.testing.assert_allclose(probs.affine, nib.load(str(scan)).affine)
    p = np.asarray(probs.dataobj)
    assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_array_equal(mask, (p >= 0.45).astype(np.uint8))
    # the overlay, read back: the predicted contour drawn around the mask's slice
    scan_image = nib.load(str(scan))
    view = case_view("lung_006", np.asarray(scan_image.dataobj), mask, scan_image.affine)
    assert view.pred.any(), "threshold chosen so the overlay has a contour"
    png = mpimg.imread(tmp_path / "lung_006_overlay.png")
    (box,) = panels(png)
    check_contour(png[box], PRED_COLOUR, view.pred)
    assert not colour_mask(png, TRUE_COLOUR).any()  # no label, no true contour
    assert len(report.extra) == 2
    from lungseg.core.recipe import Component

    kept = predict(
        best, [scan], tmp_path / "pp", threshold=0.45, postprocess=[Component("largest-components")]
    )
    largest = np.asarray(nib.load(str(kept.written[0])).dataobj)
    assert largest.sum() <= mask.sum() and not (largest & ~mask).any()


@pytest.mark.slow
def test_cli_bad_inputs_each_get_one_message_and_the_good_one_is_written(
    tiny_trained, tiny_dataset, tmp_path
):
    _, best = tiny_trained
    scan = _scan(tiny_dataset)
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)), tmp_path / "4d.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    (tmp_path / "empty").mkdir()
    two = tmp_path / "two_series"
    image = nib.load(str(scan))
    write_dicom_series(image, two, "1.2.826.0.1.3680043.2.1125.2")
    write_dicom_series(image, tmp_path / "tmp_b", "1.2.826.0.1.3680043.2.1125.3")
    for f in (tmp_path / "tmp_b").iterdir():
        f.rename(two / f"b_{f.name}")
    bad = {
        "flat.nii.gz": "expected a 3D volume",
        "4d.nii.gz": "expected a 3D volume",
        "broken.nii.gz": "not a readable NIfTI",
        "empty": "no DICOM series",
        "two_series": "2 DICOM series",
        "missing.nii.gz": "no such file",
    }
    cmd = [sys.executable, "-m", "lungseg", "predict", str(scan)]
    cmd += [str(tmp_path / name) for name in bad]
    cmd += ["--checkpoint", str(best), "--out", str(tmp_path / "out")]
    result = subprocess.run(
        cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300
    )
    assert result.returncode == 4  # some inputs failed, the others were written
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lungseg: error:")]
    assert len(errors) == len(bad)
    for name, message in bad.items():
        assert any(name in line and message in line for line in errors), (name, errors)
    assert f"{len(bad)} input(s) failed" in result.stderr
    assert (tmp_path / "out" / "lung_006.nii.gz").is_file()


def test_checkpoint_without_recipe_fails_with_one_line(tiny_dataset, tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    cmd = [sys.executable, "-m", "lungseg", "predict", str(_scan(tiny_dataset))]
    result = subprocess.run(
        [*cmd, "--checkpoint", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert result.returncode == 3  # a checkpoint error
    assert result.stderr.strip().count("\n") == 0 and "has no lungseg recipe" in result.stderr


def test_pickled_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"lungseg": {"recipe": {}}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        predict(path, [tmp_path], tmp_path / "out")
    assert not marker.exists()


def test_flip_tta_makes_predictions_mirror_equivariant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    with torch.no_grad():  # a lopsided kernel: the plain model is not mirror-symmetric
        model[0].weight[:, :, 0, :] += 1.0
    slices = np.random.default_rng(0).normal(size=(3, 16, 12)).astype(np.float32)
    mirrored = slices[:, ::-1, :].copy()
    plain = predict_probs(model, slices, batch_size=2)
    assert not np.allclose(predict_probs(model, mirrored)[:, ::-1, :], plain, atol=1e-4)
    tta = predict_probs(model, slices, batch_size=2, tta=True)
    np.testing.assert_allclose(predict_probs(model, mirrored, tta=True)[:, ::-1, :], tta, atol=1e-6)


def _post(name: str, **params):
    return load_registry().create("postprocessor", name, params, "evaluate.postprocess[0]")


def test_size_and_count_postprocessors():
    mask = np.zeros((20, 20, 10), bool)
    mask[1:6, 1:6, 1:6] = True  # 125 voxels
    mask[10:12, 10:12, 2:4] = True  # 8 voxels
    mask[15, 15, 8] = True  # 1 voxel
    spacing = (1.0, 1.0, 2.0)  # voxel = 0.002 ml
    image = np.zeros(mask.shape, np.float32)
    kept = _post("min-size", min_ml=0.01)(mask, image, spacing)
    assert kept.sum() == 125 + 8
    assert _post("largest-components", count=1)(mask, image, spacing).sum() == 125
    assert _post("largest-components", count=5)(mask, image, spacing).sum() == 134
    empty = np.zeros_like(mask)
    assert not _post("min-size")(empty, image, spacing).any()


def test_inside_lungs_drops_lesions_outside_the_lungs():
    image = np.full((40, 40, 6), -1000.0, np.float32)  # air around the body
    image[5:35, 5:35] = 40.0  # body
    image[10:20, 10:30] = -850.0  # a lung
    mask = np.zeros(image.shape, bool)
    mask[13:16, 14:17, 2:4] = True  # nodule inside the lung
    image[13:16, 14:17, 2:4] = 30.0
    mask[28:31, 20:23, 2:4] = True  # in soft tissue, 8 voxels from the lung
    mask[0:2, 0:2, 1] = True  # outside the body, 12.7 mm from the lung
    out = _post("inside-lungs", margin_mm=2.0)(mask, image, (1.0, 1.0, 2.0))
    assert out[13:16, 14:17, 2:4].all()
    assert out.sum() == 18
    wide = _post("inside-lungs", margin_mm=12.0)(mask, image, (1.0, 1.0, 2.0))
    assert wide[28:31, 20:23, 2:4].all() and not wide[0:2, 0:2, 1].any()


@pytest.fixture(scope="module")
def trained_with_context(tiny_dataset, tmp_path_factory):
    """The tiny recipe with ``data.context: 1``, trained for one epoch: ``(recipe, best)``."""
    return train_tiny(tiny_dataset, tmp_path_factory.mktemp("context"), context=1)


def _scan_and_store_agree(recipe, best) -> Predictor:
    """Predict each stored case from its raw scan and from its stored slices: the same."""
    predictor, trained = Predictor.from_checkpoint(best, device="cpu", threshold=0.5)
    assert predictor.context == trained.data.context == recipe.data.context
    first = next(m for m in predictor.model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 2 * predictor.context + 1
    store = open_store(recipe)
    for case in store.cases()[:2]:
        attrs = store.attrs(case)
        image, geometry = read_image(attrs["image_path"])
        from_scan = predictor.scan(image, geometry.affine, geometry.spacing)
        slices, _ = store.read_case(case)
        from_store = predictor.stored(slices, attrs["trace"], None, geometry.spacing)
        assert from_scan.slice_probs.shape == from_store.slice_probs.shape == slices.shape
        # the store keeps float16 slices: the probabilities differ by rounding only
        np.testing.assert_allclose(from_scan.slice_probs, from_store.slice_probs, atol=1e-3)
        np.testing.assert_allclose(from_scan.probs, from_store.probs, atol=1e-3)
        assert from_scan.probs.shape == image.shape
    return predictor


@pytest.mark.slow
def test_a_context_network_predicts_raw_scans_as_their_stored_slices(trained_with_context):
    recipe, best = trained_with_context
    assert recipe.data.context == 1
    predictor = _scan_and_store_agree(recipe, best)
    # the context matters: the same slices without their neighbours give other probabilities
    slices, _ = open_store(recipe).read_case(open_store(recipe).cases()[0])
    alone = np.repeat(slices[:, None], 3, axis=1)
    with torch.inference_mode():
        flat = torch.sigmoid(predictor.model(torch.from_numpy(alone))).numpy()[:, 0]
    assert not np.allclose(flat, predict_probs(predictor.model, slices, context=1), atol=1e-4)


@pytest.mark.slow
def test_without_context_raw_scans_and_stored_slices_agree_as_before(tiny_trained):
    recipe, best = tiny_trained
    assert _scan_and_store_agree(recipe, best).context == 0


@pytest.mark.slow
def test_a_progress_bar_counts_scans_on_a_terminal_only(
    tiny_trained, tiny_dataset, tmp_path, capsys, monkeypatch
):
    _, best = tiny_trained
    scan = _scan(tiny_dataset)
    twin = tmp_path / "twin.nii.gz"
    twin.write_bytes(scan.read_bytes())
    predict(best, [scan, twin], tmp_path / "quiet")  # stderr is captured: not a terminal
    assert "predict" not in capsys.readouterr().err
    monkeypatch.setitem(console._settings, "progress", True)  # as on a terminal
    predict(best, [scan, twin], tmp_path / "shown")
    err = capsys.readouterr().err
    assert "predict:" in err and "2/2" in err and "scan" in err, err


@pytest.mark.slow
def test_nnunet_channel_suffix_is_dropped_from_mask_names(tiny_trained, tiny_dataset, tmp_path):
    """``imagesTs/lung_006_0000.nii.gz`` gives ``lung_006.nii.gz``, as nnU-Net names it."""
    _, best = tiny_trained
    images = tmp_path / "imagesTs"
    images.mkdir()
    scan = nib.load(str(_scan(tiny_dataset)))
    nib.save(scan, str(images / "lung_006_0000.nii.gz"))
    nib.save(scan, str(images / "lung_007_0000.nii"))
    report = predict(best, [images], tmp_path / "out", prob=True)
    assert not report.failed, report.failed
    names = sorted(p.name for p in report.written + report.extra)
    assert names == [
        "lung_006.nii.gz",
        "lung_006_prob.nii.gz",
        "lung_007.nii",
        "lung_007_prob.nii.gz",
    ]
    assert nib.load(str(tmp_path / "out" / "lung_007.nii")).shape == scan.shape


@pytest.mark.slow
def test_format_nii_writes_uncompressed_masks_equal_to_the_gzipped_ones(
    tiny_trained, tiny_dataset, tmp_path
):
    _, best = tiny_trained
    scan = _scan(tiny_dataset)
    gz = predict(best, [scan], tmp_path / "gz", threshold=0.45, prob=True)
    raw = predict(best, [scan], tmp_path / "raw", threshold=0.45, prob=True, output_format="nii")
    assert [p.name for p in raw.written + raw.extra] == ["lung_006.nii", "lung_006_prob.nii"]
    assert (tmp_path / "raw" / "lung_006.nii").read_bytes()[:2] != b"\x1f\x8b"  # not gzip
    for a, b in zip(gz.written + gz.extra, raw.written + raw.extra, strict=True):
        np.testing.assert_array_equal(np.asarray(nib.load(a).dataobj), nib.load(b).dataobj)
        np.testing.assert_allclose(nib.load(a).affine, nib.load(b).affine)
