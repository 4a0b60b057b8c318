"""``lungseg train``: Lightning training with the best-Dice and last checkpoints.

Safe under every launcher: run directly, under ``torchrun`` / ``srun`` (every rank starts the
same command) or Lightning's own DDP launcher (which re-runs the command line in child
processes). Data preparation happens once per job, on global rank 0, in
``SliceDataModule.prepare_data``; only global rank 0 writes the recipe and the split.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

from lungseg.data import SliceDataModule
from lungseg.errors import CheckpointError
from lungseg.manager import load_registry
from lungseg.module import SegmentationModule
from lungseg.recipe import Recipe
from lungseg.trainer_config import build_trainer, check_trainer_keys, keep_csv_history

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


@rank_zero_only
def _save_recipe(recipe: Recipe, output: Path) -> None:
    recipe.save(output / "recipe.yaml")


def train(
    recipe: Recipe, *, resume: bool = False, callbacks: list[Callback] | None = None
) -> TrainResult:
    """Train the recipe's model; with ``resume`` continue from ``checkpoints/last.ckpt``.

    Args:
        recipe: the run's recipe.
        resume: restore weights, optimiser, LR scheduler, epoch and global step from
            ``<output>/checkpoints/last.ckpt`` and train on to ``trainer.max_epochs``.
        callbacks: extra Lightning callbacks.

    Returns:
        Paths of the best and last checkpoints.

    Raises:
        CheckpointError: ``resume`` without a last checkpoint.
        RecipeError: a trainer value Lightning rejects.
    """
    _quiet_lightning()
    check_trainer_keys(recipe)
    output = Path(recipe.output)
    last = output / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise CheckpointError(f"{last}: nothing to resume; run `lungseg train` without --resume")
    _save_recipe(recipe, output)
    pl.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    registry = load_registry()
    datamodule = SliceDataModule(recipe, registry)
    module = SegmentationModule(recipe.to_dict())
    trainer, best, last_cb = build_trainer(recipe, output, callbacks)
    if resume and launch_rank() == 0:
        step = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        keep_csv_history(trainer.loggers, int(step))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if trainer.is_global_zero:
        datamodule.write_split(output)
    return TrainResult(
        best.best_model_path, last_cb.last_model_path, output, trainer.is_global_zero
    )
