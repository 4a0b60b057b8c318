"""Trainer options from the recipe, and resume after a real SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import Callback

from lungseg.core.build import assemble
from lungseg.core.errors import CheckpointError, OutputError, RecipeError
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.training.train import launch_rank, train, train_folds
from lungseg.training.trainer import build_trainer

from ..conftest import tiny_recipe_dict


def _recipe(data: Path, work: Path, trainer: dict | None = None, **sections):
    raw = tiny_recipe_dict(data, work)
    raw["trainer"].update(trainer or {})
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return recipe_from_dict(raw, source="tiny.yaml")


@pytest.mark.parametrize(
    ("trainer", "sections", "key"),
    [
        ({"precision": "fp8"}, {}, "trainer.precision"),
        ({"loggers": ["wandb"]}, {}, "trainer.loggers"),
        ({"accumulate_grad_batches": 0}, {}, "trainer.accumulate_grad_batches"),
        ({"strategy": "no-such-strategy"}, {}, "trainer.accelerator / devices"),
        ({}, {"optimizer": {"scheduler": "step"}}, "optimizer.scheduler"),
    ],
)
def test_bad_trainer_values_name_the_key(tiny_dataset, tmp_path, trainer, sections, key):
    with pytest.raises(RecipeError, match=rf"tiny\.yaml: {key}"):  # when read, or when built
        build_trainer(_recipe(tiny_dataset, tmp_path, trainer, **sections), tmp_path / "run")


@pytest.mark.parametrize("name", ["cosine", "plateau"])
def test_schedulers_from_the_recipe(tiny_dataset, tmp_path, name):
    recipe = _recipe(tiny_dataset, tmp_path, optimizer={"scheduler": name, "min_lr": 1e-5})
    config = assemble(recipe).module().configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    if name == "cosine":
        assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
        assert scheduler.T_max == recipe.trainer.max_epochs and scheduler.eta_min == 1e-5
    else:
        assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        assert config["lr_scheduler"]["monitor"] == "val_dice" and scheduler.mode == "max"


def test_compile_is_wired_and_keeps_checkpoint_keys(tiny_dataset, tmp_path):
    recipe = _recipe(tiny_dataset, tmp_path, {"compile": True})
    module = assemble(recipe).module()
    keys = list(module.state_dict())
    module.on_fit_start()
    assert isinstance(module.__dict__["_compiled"], torch._dynamo.eval_frame.OptimizedModule)
    assert list(module.state_dict()) == keys  # checkpoints stay loadable without compile
    module.on_fit_end()
    assert module.__dict__["_compiled"] is None


def test_launch_rank_reads_every_launcher(monkeypatch):
    for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert launch_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_rank() == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert launch_rank() != 0
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert launch_rank() == 0
    monkeypatch.setenv("RANK", "3")
    assert launch_rank() == 3


class _Probe(Callback):
    """Records, inside the real forward pass, autocast and the input memory format."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, torch.dtype, bool]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        def hook(_module, args, output):
            x = args[0]
            channels_last = x.is_contiguous(memory_format=torch.channels_last)
            self.seen.append((torch.is_autocast_enabled("cpu"), output.dtype, channels_last))

        pl_module.model.register_forward_hook(hook)


@pytest.mark.slow
def test_bf16_channels_last_cosine_loggers_and_early_stopping(tiny_dataset, tmp_path):
    trainer = {
        "precision": "bf16-mixed",
        "channels_last": True,
        "max_epochs": 3,
        "early_stopping_patience": 1,
        "gradient_clip_val": 1.0,
        "accumulate_grad_batches": 2,
        "batch_size": 16,
    }
    recipe = _recipe(tiny_dataset, tmp_path, trainer, optimizer={"scheduler": "cosine"})
    probe = _Probe()
    result = train(recipe, callbacks=[probe])
    assert probe.seen and all(p == (True, torch.bfloat16, True) for p in probe.seen)

    ckpt = torch.load(result.last, map_location="cpu", weights_only=True)
    assert ckpt["lr_schedulers"][0]["T_max"] == 3
    assert ckpt["optimizer_states"][0]["state"]  # Adam moments saved
    stopper = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping"))
    assert stopper["patience"] == 1
    assert Path(result.best).name == "best.ckpt"

    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val_dice")]
    dice = [float(r["val_dice"]) for r in rows]
    expected = len(dice)  # the epoch after the first one without a better val_dice is the last
    for i in range(1, len(dice)):
        if dice[i] <= max(dice[:i]):
            expected = i + 1
            break
    assert len(dice) == min(expected, 3) and ckpt["epoch"] == len(dice) - 1
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "run").rglob("*"))
    assert "lr-Adam" in (tmp_path / "run" / "logs" / "metrics.csv").read_text()


def _read(path: Path, tries: int = 20) -> dict | None:
    for _ in range(tries):  # the file may be mid-write
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            time.sleep(0.2)
    return None


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_restores_everything(tiny_dataset, tmp_path):
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["trainer"].update(max_epochs=3, checkpoint_every_n_steps=2, loggers=["csv"])
    raw["optimizer"].update(scheduler="cosine")
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    steps_per_epoch = 90 // 8 + 1  # 3 training cases x 30 slices, batch 8
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, "-m", "lungseg", "train", str(recipe_file)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    killed_at = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ckpt = _read(last, tries=1) if last.is_file() else None
            if ckpt and ckpt["global_step"] > steps_per_epoch:  # in the second epoch or later
                # Freeze the run, then look at what a resume would find: nothing is written
                # between this look and the kill, so the checkpoint checked is the one resumed.
                proc.send_signal(signal.SIGSTOP)
                frozen = _read(last)
                if frozen and frozen["global_step"] % steps_per_epoch:  # mid-epoch, not a boundary
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    killed_at = frozen
                    break
                proc.send_signal(signal.SIGCONT)  # it stood at an epoch end: let it go on
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert killed_at is not None, proc.stdout.read().decode()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    step = killed_at["global_step"]
    batches = killed_at["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    # a step checkpoint inside epoch 1 or 2: some, not all, of that epoch's batches are done
    assert killed_at["epoch"] == step // steps_per_epoch >= 1
    assert 0 < batches == step % steps_per_epoch < steps_per_epoch
    assert killed_at["lungseg"]["val_dice"] is None  # weights saved between validations
    assert killed_at["optimizer_states"][0]["state"]

    done = subprocess.run(
        [*cmd, "--resume"], capture_output=True, encoding="utf-8", errors="replace", timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(last, map_location="cpu", weights_only=True)
    # the resumed run did only the killed epoch's remaining batches, then the rest
    assert final["epoch"] == 2 and final["global_step"] == 3 * steps_per_epoch
    # Adam's step count and the cosine schedule went on from the checkpoint, not from zero
    adam_steps = {float(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {3.0 * steps_per_epoch}
    assert final["lr_schedulers"][0]["last_epoch"] == 3
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as handle:
        epochs = [int(r["epoch"]) for r in csv.DictReader(handle) if r.get("val_dice")]
    assert epochs == [0, 1, 2]  # the resumed process did not start again at epoch 0


def _copy_run(tiny_trained, tmp_path: Path, **sections) -> tuple[Recipe, Path]:
    """A copy of the session's trained run (never touch the shared one), and its recipe."""
    recipe, _ = tiny_trained
    out = tmp_path / "run"
    shutil.copytree(recipe.output, out)
    raw = recipe.to_dict()
    raw["output"] = str(out)
    for key, value in sections.items():
        raw[key] = {**raw[key], **value}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return recipe_from_dict(raw, source=str(path)), out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_new_train_never_replaces_an_earlier_runs_checkpoints(tiny_trained, tmp_path):
    recipe, out = _copy_run(tiny_trained, tmp_path)
    before = _snapshot(out)
    with pytest.raises(OutputError) as err:
        train(recipe)
    message = str(err.value)
    assert message.startswith(f"output {out} holds the checkpoints of an earlier run")
    assert "--resume to continue it or --overwrite to replace it" in message
    with pytest.raises(OutputError, match="pass only one"):
        train(recipe, resume=True, overwrite=True)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_overwrite_replaces_lungsegs_checkpoints_and_nothing_else(tiny_trained, tmp_path):
    recipe, out = _copy_run(tiny_trained, tmp_path, trainer={"max_epochs": 2})
    folder = out / "checkpoints"
    shutil.copy(folder / "best.ckpt", folder / "best-epoch000-dice0.9999.ckpt")  # older names
    (folder / "mine.ckpt").write_text("not lungseg's")
    (folder / "notes.txt").write_text("mine too")
    (out / "notes.md").write_text("and this")
    result = train(recipe, overwrite=True)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best.ckpt", "best.json", "last.ckpt", "last.json", "mine.ckpt", "notes.txt"]
    assert (folder / "mine.ckpt").read_text() == "not lungseg's"
    assert (folder / "notes.txt").read_text() == "mine too"
    assert (out / "notes.md").read_text() == "and this"
    last = torch.load(result.last, map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 24  # the new run's, not the copy's
    assert json.loads((folder / "last.json").read_text())["global_step"] == 24


@pytest.mark.slow
def test_resume_after_the_model_changed_is_one_clear_error(tiny_trained, tmp_path):
    recipe, out = _copy_run(tiny_trained, tmp_path, model={"features": [8, 16]})
    before = _snapshot(out)
    with pytest.raises(CheckpointError) as err:
        train(recipe, resume=True)
    last = out / "checkpoints" / "last.ckpt"
    message = str(err.value)
    source = recipe.source_file
    assert message.startswith(f"{last}: trained with another model.features than {source}")
    assert "(checkpoint [4, 8], recipe [8, 16])" in message and "--overwrite" in message
    assert _snapshot(out) == before  # nothing written, not even recipe.yaml

    # the command line: one line, exit status 3 (a checkpoint error), no traceback
    cmd = [sys.executable, "-m", "lungseg", "train", recipe.source_file, "--resume"]
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "model.features" in done.stderr
    assert done.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_resume_from_weights_of_another_net_is_one_clear_error(tiny_trained, tmp_path):
    recipe, out = _copy_run(tiny_trained, tmp_path)
    last = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    other = recipe.to_dict()
    other["model"]["features"] = [8, 16]
    # the stored recipe says [4, 8]
    ckpt["state_dict"] = assemble(recipe_from_dict(other)).module().state_dict()
    torch.save(ckpt, last)
    with pytest.raises(CheckpointError) as err:
        train(recipe, resume=True)
    message = str(err.value)
    assert message.startswith(f"{last}: its weights do not fit the recipe's model")
    assert "size mismatch" in message and "\n" not in message


def test_train_refuses_an_output_holding_other_files(tiny_recipe, tmp_path):
    out = Path(tiny_recipe.output)
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    with pytest.raises(OutputError, match="holds files lungseg did not make"):
        train(tiny_recipe)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


def _fold_recipe(tiny_dataset: Path, tmp_path: Path, folds: int = 2) -> Path:
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["split"] = {"folds": folds, "seed": 0}
    raw["trainer"]["max_epochs"] = 1
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_fold_all_trains_every_fold_into_its_own_run_folder(tiny_dataset, tmp_path):
    from lungseg.core.safety import read_marker
    from lungseg.training.dataset import open_store
    from lungseg.training.folds import fold_splits

    recipe_file = _fold_recipe(tiny_dataset, tmp_path)
    cmd = [sys.executable, "-m", "lungseg", "train", str(recipe_file), "--fold", "all"]
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run"
    assert read_marker(out)["kind"] == "run" and not (out / "checkpoints").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["split"]["folds"] == 2
    cases = open_store(recipe_from_dict(yaml.safe_load(recipe_file.read_text()))).cases()
    validated = []
    for k in (0, 1):
        run = out / f"fold_{k}"
        assert read_marker(run)["kind"] == "run"
        best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
        assert best.is_file() and last.is_file() and f"best checkpoint: {best}" in done.stdout
        split = json.loads((run / "split.json").read_text())
        assert split == fold_splits(cases, 2, 0.0, 0)[k]
        stored = torch.load(best, map_location="cpu", weights_only=True)["lungseg"]["recipe"]
        assert stored["split"]["fold"] == k and stored["output"] == str(run)
        assert yaml.safe_load((run / "recipe.yaml").read_text())["split"]["fold"] == k
        validated += split["val"]
    assert sorted(validated) == cases  # each case validated by exactly one fold

    # again: refused (fold 0 first), nothing replaced; --resume continues each fold
    recipe = recipe_from_dict(yaml.safe_load(recipe_file.read_text()), source=str(recipe_file))
    before = _snapshot(out)
    with pytest.raises(OutputError, match=f"output {out / 'fold_0'} holds the checkpoints"):
        train_folds(recipe)
    assert _snapshot(out) == before
    shutil.rmtree(out / "fold_1" / "checkpoints")  # fold 1 lost: it starts afresh
    results = train_folds(recipe, resume=True)
    assert [r.output for r in results] == [out / "fold_0", out / "fold_1"]
    best = "fold_0/checkpoints/best.ckpt"
    assert (out / best).read_bytes() == before[best]  # fold 0 was done already
    assert (out / "fold_1" / "checkpoints" / "best.ckpt").is_file()
