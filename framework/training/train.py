"""``lungseg train``: Lightning training with the best-Dice and last checkpoints.

Safe under every launcher: run directly, under ``torchrun`` / ``srun`` (every rank starts the
same command) or Lightning's own DDP launcher (which re-runs the command line in child
processes). Data preparation happens once per job, on global rank 0, in
``SliceDataModule.prepare_data``; only global rank 0 writes the recipe and the split.

A run folder is never reused by accident: a new ``train`` into an output whose
``checkpoints/`` already holds checkpoints is refused unless ``resume`` (continue it) or
``overwrite`` (delete lungseg's checkpoint files first) is given, and ``resume`` refuses a
``last.ckpt`` trained with another preprocessing chain or model.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

from lungseg.core.build import Parts, assemble
from lungseg.core.errors import CheckpointError, OutputError
from lungseg.core.recipe import Recipe
from lungseg.core.safety import claim_dir
from lungseg.training.checkpoint import (
    LAST,
    check_matches,
    clear_checkpoints,
    read_checkpoint,
    stored_recipe,
)
from lungseg.training.dataset import SliceDataModule
from lungseg.training.module import SegmentationModule
from lungseg.training.trainer import build_trainer, keep_csv_history

__all__ = ["TrainResult", "build_trainer", "launch_rank", "train"]


@dataclass
class TrainResult:
    """Where a training run left its outputs.

    Attributes:
        best: path of the best-``val_dice`` checkpoint (``""`` if none was written).
        last: path of ``last.ckpt``.
        output: the run directory.
        is_global_zero: whether this process is global rank 0 (only it evaluates, predicts).
    """

    best: str
    last: str
    output: Path
    is_global_zero: bool


def launch_rank() -> int:
    """This process's global rank as its launcher announced it, before DDP starts.

    ``RANK`` (torchrun), ``SLURM_PROCID`` (srun), else ``NODE_RANK`` / ``LOCAL_RANK`` (Lightning's
    launcher children); 0 for a plain process. Only a process with rank 0 may download or
    evaluate outside the Trainer.
    """
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return local if node == 0 else node * 1_000_000 + local  # only "is it 0" matters


def _quiet_lightning() -> None:
    # Lightning's tips (e.g. "consider num_workers") are noise for a CLI user.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
    # train() itself decides what may be in the checkpoint folder (resume / overwrite)
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


@rank_zero_only
def _save_recipe(recipe: Recipe, output: Path) -> None:
    recipe.save(output / "recipe.yaml")


def _check_resume(recipe: Recipe, last: Path, module: SegmentationModule) -> dict[str, Any]:
    """Read ``last.ckpt`` and refuse it unless it was trained with this recipe's chain and model.

    Besides comparing the stored recipe, the weights are loaded into the recipe's model once
    (``trainer.fit`` would otherwise fail deep inside Lightning with a size mismatch).

    Returns:
        The checkpoint dict (tensors memory-mapped).

    Raises:
        CheckpointError: unreadable, another chain or model, or weights that do not fit.
    """
    raw = read_checkpoint(last, mmap=True)
    fix = (
        "undo that change to resume this run, or start it again with "
        "`lungseg train RECIPE --overwrite` (or give it another output)"
    )
    check_matches(last, stored_recipe(raw, last), recipe, fix=fix)
    try:
        module.load_state_dict(raw.get("state_dict") or {}, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = (lines or str(exc).splitlines())[0].rstrip(".")
        raise CheckpointError(
            f"{last}: its weights do not fit the recipe's model ({recipe.model.to_dict()}): "
            f"{detail}; {fix}"
        ) from None
    return raw


def train(
    recipe: Recipe | Parts,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
) -> TrainResult:
    """Train the recipe's model; with ``resume`` continue from ``checkpoints/last.ckpt``.

    Args:
        recipe: the run's recipe, or its assembled parts (:mod:`lungseg.core.build`).
        resume: restore weights, optimiser, LR scheduler, epoch and global step from
            ``<output>/checkpoints/last.ckpt`` and train on to ``trainer.max_epochs``.
        overwrite: start afresh in an output that already holds checkpoints: delete
            lungseg's checkpoint files there first (``best.ckpt``, ``last.ckpt``, their
            JSONs, older ``best-*.ckpt``), nothing else.
        callbacks: extra Lightning callbacks.

    Returns:
        Paths of the best and last checkpoints.

    Raises:
        OutputError: the output is not a lungseg run folder, or (without ``resume`` or
            ``overwrite``) its ``checkpoints/`` holds checkpoints already.
        CheckpointError: ``resume`` without a last checkpoint, or with one that is unreadable
            or was trained with another preprocessing chain or model.
        RecipeError: a trainer value Lightning rejects.
    """
    _quiet_lightning()
    parts = assemble(recipe)
    recipe = parts.recipe
    if resume and overwrite:
        raise OutputError(
            "--resume continues the run in output and --overwrite replaces it: pass only one"
        )
    output = Path(recipe.output)
    folder = output / "checkpoints"
    last = folder / LAST
    if resume and not last.is_file():
        raise CheckpointError(f"{last}: nothing to resume; run `lungseg train` without --resume")
    rank0 = launch_rank() == 0
    if rank0:
        claim_dir(output, "run", role="output")
    raw = None
    pl.seed_everything(recipe.trainer.seed, workers=True, verbose=False)  # before the weights
    module = parts.module()
    if resume:
        raw = _check_resume(recipe, last, module)
    else:
        existing = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
        if existing and not overwrite:
            names = ", ".join(p.name for p in existing[:3])
            raise OutputError(
                f"output {output} holds the checkpoints of an earlier run ({folder}: {names}); "
                "pass --resume to continue it or --overwrite to replace it, or give another output"
            )
        if overwrite and rank0:
            clear_checkpoints(folder)
    _save_recipe(recipe, output)
    datamodule = SliceDataModule(parts)
    trainer, best, last_cb = build_trainer(recipe, output, callbacks)
    if raw is not None and rank0:
        keep_csv_history(trainer.loggers, int(raw.get("global_step", 0)))
    del raw
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if trainer.is_global_zero:
        datamodule.write_split(output)
    return TrainResult(
        best.best_model_path, last_cb.last_model_path, output, trainer.is_global_zero
    )
