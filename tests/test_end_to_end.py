"""`lungseg run` on a tiny recipe: every stage for real, every output checked."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
import torch

from lungseg.core.build import assemble
from lungseg.core.errors import CheckpointError
from lungseg.inference.figures import plot_loss_curve, read_epoch_log
from lungseg.training.checkpoint import find_best, load_checkpoint

from .inference.test_figures import has_colour

# Enough training for the tiny UNet to find the tumours: tumour pixels are about 1% of the
# slices, so plain BCE settles on "no tumour" (Dice 0); weighted 10x, six epochs reach a mean
# case Dice of 0.70 (cases 0.61 and 0.80; slice Dice 0.69), the same on every run.
LEARNS = ["trainer.max_epochs=6", "model.features=[8, 16]", "loss={name: bce, pos_weight: 10}"]


@pytest.mark.slow
def test_run_writes_every_output_and_predict_keeps_geometry(
    tiny_recipe_file, tiny_recipe, tiny_dataset, tmp_path
):
    overrides = [arg for item in LEARNS for arg in ("--set", item)]
    result = subprocess.run(
        [sys.executable, "-m", "lungseg", "run", str(tiny_recipe_file), *overrides],
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
    # the chain as run: each step with its plugin's defaults written out
    assert raw["lungseg"]["recipe"]["preprocess"] == assemble(tiny_recipe).recipe.preprocess_dict()
    assert (out / "checkpoints" / "last.ckpt").is_file()

    split = json.loads((out / "split.json").read_text())
    assert set(split["val"]).isdisjoint(split["train"]) and len(split["val"]) == 2

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val"
    assert [r["case"] for r in metrics["per_case"]] == split["val"]
    assert all(r["tumour_voxels"] > 0 for r in metrics["per_case"])
    assert all(r["dice"] >= 0.4 for r in metrics["per_case"])  # measured 0.61 and 0.80
    assert metrics["mean_case_dice"] >= 0.5  # measured 0.70
    assert metrics["mean_case_dice"] == pytest.approx(
        np.mean([r["dice"] for r in metrics["per_case"]])
    )
    assert metrics["slice_dice"] >= 0.5  # measured 0.69
    assert (out / "per_case.csv").read_text().startswith("case,")
    log_csv = out / "logs" / "metrics.csv"
    log = read_epoch_log(log_csv)
    assert sorted(log["train_loss"]) == sorted(log["val_loss"]) == sorted(log["val_dice"])
    assert len(log["train_loss"]) == 6
    assert log["train_loss"][5] < 0.5 * log["train_loss"][0]
    assert max(log["val_dice"].values()) >= 0.5
    # the best checkpoint is the epoch of highest validation Dice (monitored, mode max)
    assert raw["epoch"] == max(log["val_dice"], key=log["val_dice"].get)
    # the loss curve, read back: both losses on the left, the validation Dice on the right,
    # and exactly the picture of this log
    png = mpimg.imread(out / "loss_curve.png")
    left, right = png[:, : png.shape[1] // 2], png[:, png.shape[1] // 2 :]
    for colour, side, other in (("#1f77b4", left, right), ("#ff7f0e", left, right)):
        assert has_colour(side, colour) and not has_colour(other, colour)  # C0, C1: losses
    assert has_colour(right, "#2ca02c") and not has_colour(left, "#2ca02c")  # C2: Dice
    again = plot_loss_curve(log_csv, tmp_path / "again.png", loss_name="bce")
    np.testing.assert_array_equal(png, mpimg.imread(again))

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
    assert mixed.returncode == 4  # some inputs failed, the others were written
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
