"""How ``lungseg run --resume`` tells finished stages from unfinished ones, on real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lungseg.core.errors import OutputError
from lungseg.core.recipe import recipe_from_dict
from lungseg.run_state import evaluation_done, missing_predictions, training_state

from .conftest import tiny_recipe_dict


@pytest.fixture
def recipe(tmp_path):
    raw = tiny_recipe_dict(tmp_path / "data", tmp_path)
    raw["trainer"]["max_epochs"] = 3
    return recipe_from_dict(raw, source=str(tmp_path / "r.yaml"))


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look ``seconds`` older than now."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def _checkpoints(run: Path, epoch: int, val_dice: float | None, best: bool = True) -> Path:
    folder = run / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "last.ckpt").write_bytes(b"state")
    (folder / "last.json").write_text(json.dumps({"epoch": epoch, "val_dice": val_dice}))
    if best:
        (folder / "best.ckpt").write_bytes(b"weights")
    return folder


def test_training_state_from_what_training_records(recipe):
    run = Path(recipe.output)
    assert training_state(recipe) == "none"
    _checkpoints(run, 0, None, best=False)  # killed before its first validation
    assert training_state(recipe) == "interrupted"
    _checkpoints(run, 1, 0.4)  # validated epoch 1 of 0..2
    assert training_state(recipe) == "interrupted"
    _checkpoints(run, 2, None)  # a step checkpoint inside the final epoch
    assert training_state(recipe) == "interrupted"
    _checkpoints(run, 2, 0.5)  # the final epoch validated
    assert training_state(recipe) == "finished"


def test_an_early_stopped_training_is_finished_by_its_split_file(recipe):
    run = Path(recipe.output)
    folder = _checkpoints(run, 1, 0.4)
    (run / "split.json").write_text("{}")
    _age(run / "split.json", 60)  # from an earlier training than this last.ckpt
    assert training_state(recipe) == "interrupted"
    _age(folder / "last.ckpt", 120)  # training returned after saving it
    assert training_state(recipe) == "finished"


def test_evaluation_done_only_for_the_same_and_newer_checkpoint(recipe):
    run = Path(recipe.output)
    best = _checkpoints(run, 2, 0.5) / "best.ckpt"
    assert not evaluation_done(recipe, [best])
    (run / "metrics.json").write_text(json.dumps({"checkpoint": str(best)}))
    assert not evaluation_done(recipe, [best])  # interrupted before per_case.csv
    (run / "per_case.csv").write_text("case,dice\n")
    assert evaluation_done(recipe, [best])
    _age(run / "metrics.json", 60)  # best.ckpt changed since
    with pytest.raises(OutputError, match="--overwrite"):
        evaluation_done(recipe, [best])
    (run / "metrics.json").write_text(json.dumps({"checkpoint": str(best.resolve())}))
    assert evaluation_done(recipe, [best])


def test_evaluation_done_when_the_recipe_names_its_output_relative_to_the_cwd(
    tmp_path, monkeypatch
):
    """A run started with ``output: runs/x`` records absolute checkpoint paths."""
    monkeypatch.chdir(tmp_path)
    raw = tiny_recipe_dict(Path("data"), Path("work"))
    raw["output"] = "runs/x"
    recipe = recipe_from_dict(raw, source="r.yaml")
    best = _checkpoints(Path("runs/x"), 2, 0.5) / "best.ckpt"
    (Path("runs/x") / "metrics.json").write_text(json.dumps({"checkpoint": str(best.resolve())}))
    (Path("runs/x") / "per_case.csv").write_text("case,dice\n")
    assert evaluation_done(recipe, [best])
    assert evaluation_done(recipe, [best.resolve()])


def test_evaluation_of_another_checkpoint_is_never_taken_as_done(recipe):
    run = Path(recipe.output)
    best = _checkpoints(run, 2, 0.5) / "best.ckpt"
    (run / "per_case.csv").write_text("case,dice\n")
    (run / "metrics.json").write_text(json.dumps({"checkpoint": "other.ckpt"}))
    with pytest.raises(OutputError, match="another or an older checkpoint"):
        evaluation_done(recipe, [best])


def test_missing_predictions_and_stale_masks(tmp_path):
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"w")
    scans = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    out = tmp_path / "predictions"
    assert missing_predictions(scans, out, [ckpt]) == scans
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"mask")
    assert missing_predictions(scans, out, [ckpt]) == [scans[1]]
    _age(out / "a.nii.gz", 60)
    with pytest.raises(OutputError, match="older checkpoint"):
        missing_predictions(scans, out, [ckpt])
