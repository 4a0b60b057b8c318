"""`lungseg run` on a tiny recipe: every stage for real, every output checked."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from lungseg.checkpoint import find_best, load_checkpoint
from lungseg.errors import CheckpointError


@pytest.mark.slow
def test_run_writes_every_output_and_predict_keeps_geometry(
    tiny_recipe_file, tiny_recipe, tiny_dataset, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-m", "lungseg", "run", str(tiny_recipe_file)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "run"
    for line in (
        "[1/5] data",
        "[2/5] store",
        "[3/5] checkpoints",
        "[4/5] evaluation",
        "[5/5] predictions",
    ):
        assert line in result.stdout

    # recipe saved beside the outputs and inside the checkpoint
    assert (out / "recipe.yaml").is_file()
    best = find_best(out)
    raw = torch.load(best, map_location="cpu", weights_only=True)
    assert raw["lungseg"]["recipe"]["preprocess"] == tiny_recipe.preprocess_dict()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert "-dice" in best.name  # the monitored value is Dice (mode max)

    split = json.loads((out / "split.json").read_text())
    assert set(split["val"]).isdisjoint(split["train"]) and len(split["val"]) == 2

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val"
    assert [r["case"] for r in metrics["per_case"]] == split["val"]
    assert all(0.0 <= r["dice"] <= 1.0 for r in metrics["per_case"] if r["dice"] is not None)
    assert metrics["mean_case_dice"] == pytest.approx(
        np.mean([r["dice"] for r in metrics["per_case"] if r["tumour_voxels"] > 0])
    )
    assert metrics["slice_dice"] is not None
    assert (out / "per_case.csv").read_text().startswith("case,")
    png = (out / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "logs" / "metrics.csv").read_text()
    assert "train_loss" in log and "val_loss" in log and "val_dice" in log

    # the unlabelled test scan was predicted in its own geometry
    scan = tiny_dataset / "imagesTs" / "lung_006.nii.gz"
    mask = nib.load(str(out / "predictions" / "lung_006.nii.gz"))
    assert mask.shape == nib.load(str(scan)).shape
    np.testing.assert_allclose(mask.affine, nib.load(str(scan)).affine)
    assert mask.get_data_dtype() == np.uint8

    # predict on a scan written in another orientation: the mask follows that scan exactly
    image = nib.load(str(scan))
    flipped = nib.Nifti1Image(
        np.asarray(image.dataobj)[::-1, :, ::-1].copy(),
        image.affine
        @ np.array(
            [
                [-1, 0, 0, image.shape[0] - 1],
                [0, 1, 0, 0],
                [0, 0, -1, image.shape[2] - 1],
                [0, 0, 0, 1],
            ]
        ),
    )
    other = tmp_path / "other" / "flipped.nii.gz"
    other.parent.mkdir()
    nib.save(flipped, str(other))
    predict = subprocess.run(
        [
            sys.executable,
            "-m",
            "lungseg",
            "predict",
            str(other),
            str(scan),
            "--checkpoint",
            str(best),
            "--out",
            str(tmp_path / "pred"),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert predict.returncode == 0, predict.stderr[-2000:]
    a = nib.load(str(tmp_path / "pred" / "flipped.nii.gz"))
    b = nib.load(str(tmp_path / "pred" / "lung_006.nii.gz"))
    np.testing.assert_allclose(a.affine, flipped.affine)
    assert "".join(nib.aff2axcodes(a.affine)) == "".join(nib.aff2axcodes(flipped.affine))
    np.testing.assert_array_equal(np.asarray(a.dataobj)[::-1, :, ::-1], np.asarray(b.dataobj))
    n_skip = tiny_recipe.preprocess[1].params["count"]
    assert np.asarray(b.dataobj)[:, :, :n_skip].sum() == 0  # skipped (inferior) slices are 0

    # a bad input among good ones: the good ones are written, exit 2 names the failure
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    mixed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lungseg",
            "predict",
            str(bad),
            str(scan),
            "--checkpoint",
            str(best),
            "--out",
            str(tmp_path / "pred2"),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert mixed.returncode == 2
    assert "bad.nii.gz" in mixed.stderr and "Traceback" not in mixed.stderr
    assert (tmp_path / "pred2" / "lung_006.nii.gz").is_file()


def test_checkpoint_with_a_pickled_payload_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_checkpoint_without_recipe_is_refused(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="has no lungseg recipe"):
        load_checkpoint(path)
