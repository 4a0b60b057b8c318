"""Checkpoints that mean what they say: fixed names, honest contents, clear refusals."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from lungseg.core.build import assemble
from lungseg.core.errors import CheckpointError
from lungseg.core.recipe import Component, recipe_from_dict
from lungseg.training.checkpoint import check_matches, find_best, load_checkpoint
from lungseg.training.module import SegmentationModule
from lungseg.training.run_files import clear_checkpoints, made_by_lungseg
from lungseg.training.train import train

from ..conftest import tiny_recipe_dict


@pytest.fixture(scope="module")
def three_epochs(tiny_trained, tmp_path_factory):
    """The tiny recipe trained for 3 epochs (threshold 0.3, so ``val_dice`` moves)."""
    recipe, _ = tiny_trained  # its store is filled already
    raw = recipe.to_dict()
    raw["output"] = str(tmp_path_factory.mktemp("three") / "run")
    raw["trainer"].update(max_epochs=3, loggers=["csv"])
    raw["evaluate"]["threshold"] = 0.3
    recipe = recipe_from_dict(raw, source="three.yaml")
    return recipe, train(recipe)


def _val_dice_by_epoch(output: Path) -> list[float]:
    with open(output / "logs" / "metrics.csv", newline="") as handle:
        return [float(r["val_dice"]) for r in csv.DictReader(handle) if r.get("val_dice")]


@pytest.mark.slow
def test_fixed_names_hold_the_epoch_and_score_they_claim(three_epochs):
    recipe, result = three_epochs
    folder = Path(recipe.output, "checkpoints")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best.ckpt", "best.json", "last.ckpt", "last.json"]  # no best-v1, no .partial
    assert result.best == str(folder / "best.ckpt") and result.last == str(folder / "last.ckpt")
    assert find_best(recipe.output) == folder / "best.ckpt"

    dice = _val_dice_by_epoch(Path(recipe.output))
    assert len(dice) == 3
    best_epoch = dice.index(max(dice))  # on a tie the earlier epoch stays
    for name, epoch in (("best", best_epoch), ("last", 2)):
        ckpt = torch.load(folder / f"{name}.ckpt", map_location="cpu", weights_only=True)
        side = json.loads((folder / f"{name}.json").read_text())
        info = ckpt["lungseg"]
        assert ckpt["epoch"] == info["epoch"] == side["epoch"] == epoch
        assert ckpt["global_step"] == info["global_step"] == side["global_step"] == 12 * (epoch + 1)
        assert side["val_dice"] == info["val_dice"] == pytest.approx(dice[epoch], rel=1e-6)
        assert side["preprocess_hash"] == assemble(recipe).recipe.preprocess_hash()
        assert side["checkpoint"] == f"{name}.ckpt" and side["lungseg_version"] == info["version"]
    module, stored = load_checkpoint(folder / "best.ckpt")
    assert stored.preprocess_hash() == assemble(recipe).recipe.preprocess_hash()
    assert not module.training


@pytest.mark.slow
def test_find_best_never_picks_a_file_by_its_name(three_epochs, tmp_path):
    recipe, _ = three_epochs
    folder = tmp_path / "run" / "checkpoints"
    shutil.copytree(Path(recipe.output, "checkpoints"), folder)
    stray = folder / "best-epoch999-dice0.9999.ckpt"
    shutil.copy(folder / "last.ckpt", stray)
    assert find_best(tmp_path / "run") == folder / "best.ckpt"

    (folder / "best.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"no best checkpoint .*lungseg train RECIPE"):
        find_best(tmp_path / "run")
    (folder / "best.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"best\.ckpt: not a lungseg checkpoint \(empty"):
        find_best(tmp_path / "run")
    nothing = r"nothing/checkpoints/best\.ckpt: no best checkpoint; run"
    with pytest.raises(CheckpointError, match=nothing):
        find_best(tmp_path / "nothing")


@pytest.mark.slow
def test_clear_checkpoints_deletes_only_lungseg_files(three_epochs, tmp_path):
    recipe, _ = three_epochs
    folder = tmp_path / "checkpoints"
    shutil.copytree(Path(recipe.output, "checkpoints"), folder)
    for name in ("best-epoch003-dice0.5000.ckpt", "last.ckpt.partial"):
        (folder / name).write_bytes(b"old")
    for name in ("mine.ckpt", "notes.txt", "best.yaml"):
        (folder / name).write_text("keep me")
    assert len(made_by_lungseg(folder)) == 6
    clear_checkpoints(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["best.yaml", "mine.ckpt", "notes.txt"]


def _tiny_checkpoint(tiny_dataset: Path, tmp_path: Path, **model) -> tuple[Path, dict]:
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    module = assemble(recipe_from_dict(raw)).module()
    path = tmp_path / "tiny.ckpt"
    stored = recipe_from_dict(raw).to_dict()
    stored["model"].update(model)
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"recipe": stored},
        "lungseg": {"version": "0", "recipe": stored},
    }
    torch.save(ckpt, path)
    return path, raw


def test_a_valid_checkpoint_loads(tiny_dataset, tmp_path):
    path, raw = _tiny_checkpoint(tiny_dataset, tmp_path)
    module, recipe = load_checkpoint(path)
    assert recipe.model.params["features"] == raw["model"]["features"]
    assert isinstance(module, SegmentationModule) and not module.training


def test_weights_that_do_not_fit_their_recipe_are_one_clear_error(tiny_dataset, tmp_path):
    path, _ = _tiny_checkpoint(tiny_dataset, tmp_path, features=[16, 32])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: its weights do not fit the model of its stored recipe")
    assert "[16, 32]" in message and "size mismatch" in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty file"),
        (b"epoch: 3\nweights: none\n", "not a PyTorch checkpoint file"),
        (bytes(range(7, 256)) * 40, "not a PyTorch checkpoint file"),
        ("truncated", "truncated or corrupt file"),
        ("a list", "holds a list"),
    ],
)
def test_garbage_checkpoints_say_what_is_wrong(tiny_dataset, tmp_path, content, why):
    path = tmp_path / "run.ckpt"
    if content == "truncated":
        good, _ = _tiny_checkpoint(tiny_dataset, tmp_path)
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "a list":
        torch.save([1, 2], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a lungseg checkpoint ({why}")
    assert "\n" not in message


def test_checkpoint_with_pickled_code_is_still_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo never",))

    path = tmp_path / "evil.ckpt"
    torch.save({"lungseg": {"recipe": {}}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refused: .*\(.*GLOBAL .*system"):
        load_checkpoint(path)


def test_check_matches_names_the_differing_key(tiny_recipe):
    optimizer = dataclasses.replace(tiny_recipe.optimizer, lr=0.5)
    same = dataclasses.replace(tiny_recipe, optimizer=optimizer, output="elsewhere")
    check_matches("run.ckpt", tiny_recipe, same)  # optimiser, output, trainer... may differ

    explicit = dataclasses.replace(
        tiny_recipe, model=Component("unet", {**tiny_recipe.model.params, "in_channels": 1})
    )
    check_matches("run.ckpt", tiny_recipe, explicit)  # a default written out is no change

    wider = dataclasses.replace(tiny_recipe, model=Component("unet", {"features": [8, 16]}))
    with pytest.raises(CheckpointError) as err:
        check_matches("run.ckpt", tiny_recipe, wider)
    assert str(err.value).startswith(
        f"run.ckpt: trained with another model.features than {tiny_recipe.source_file} "
        "(checkpoint [4, 8], recipe [8, 16]); use the recipe the checkpoint was trained with"
    )

    chain = [dataclasses.replace(c) for c in tiny_recipe.preprocess]
    chain[1] = Component("skip-slices", {"count": 12})
    other = dataclasses.replace(tiny_recipe, preprocess=chain)
    with pytest.raises(CheckpointError, match=r"another preprocess\[1\]\.count .*\(checkpoint 10"):
        check_matches("run.ckpt", tiny_recipe, other, fix="retrain")
    shorter = dataclasses.replace(tiny_recipe, preprocess=chain[:3])
    with pytest.raises(CheckpointError, match=r"another preprocess .*4 steps.*; retrain$"):
        check_matches("run.ckpt", tiny_recipe, shorter, fix="retrain")

    context = dataclasses.replace(tiny_recipe.data, context=2)  # 5 input channels, not 1
    wide = dataclasses.replace(tiny_recipe, data=context)
    with pytest.raises(CheckpointError, match=r"another data\.context .*\(checkpoint 0, recipe 2"):
        check_matches("run.ckpt", tiny_recipe, wide)


class _Trainer:
    """Just what ``_save_checkpoint`` touches; ``save_checkpoint`` can die halfway."""

    def __init__(self, module: SegmentationModule, die: bool) -> None:
        self.lightning_module, self.die = module, die
        self.is_global_zero, self.global_step, self.loggers = True, 7, []
        self.strategy = type("S", (), {"barrier": staticmethod(lambda name=None: None)})()

    def save_checkpoint(self, path: str, weights_only: bool = False) -> None:
        ckpt = {"state_dict": self.lightning_module.state_dict(), "epoch": 3, "global_step": 7}
        self.lightning_module.on_save_checkpoint(ckpt)
        if self.die:  # the first half of the bytes, then the process is gone
            whole = io.BytesIO()
            torch.save(ckpt, whole)
            Path(path).write_bytes(whole.getvalue()[:1000])
            raise KeyboardInterrupt
        torch.save(ckpt, path)


def test_a_save_killed_halfway_leaves_the_previous_best_whole(tiny_recipe, tmp_path):
    from lungseg.training.trainer import BestCheckpoint

    module = assemble(tiny_recipe).module()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    callback = BestCheckpoint(folder)
    best = folder / "best.ckpt"
    callback._save_checkpoint(_Trainer(module, die=False), str(best))
    before = best.read_bytes(), (folder / "best.json").read_text()
    assert json.loads(before[1])["global_step"] == 7 and json.loads(before[1])["epoch"] == 3
    with pytest.raises(KeyboardInterrupt):
        callback._save_checkpoint(_Trainer(module, die=True), str(best))
    assert (folder / "best.ckpt.partial").stat().st_size == 1000  # the torn write is there
    assert (best.read_bytes(), (folder / "best.json").read_text()) == before
    load_checkpoint(best)  # still whole
    callback._save_checkpoint(_Trainer(module, die=False), str(best))  # the next save cleans up
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "best.json"]
