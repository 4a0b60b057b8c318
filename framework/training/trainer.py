"""The Lightning ``Trainer`` a recipe asks for: checkpoints, early stopping, loggers, precision.

Checkpoints (in ``<output>/checkpoints``, fixed names, see :mod:`lungseg.training.checkpoint`):

- ``best.ckpt``: the single best epoch by validation Dice (``val_dice``, mode ``max``; on a
  tie the earlier epoch stays), written after validation.
- ``last.ckpt``: refreshed after every validation and, with
  ``trainer.checkpoint_every_n_steps: N``, every N optimiser steps as well. It holds the
  weights, optimiser and LR-scheduler state, epoch and global step, so
  ``lungseg train --resume`` continues after a crash or a SIGKILL. Without step checkpoints a
  run killed mid-epoch resumes from the end of the last finished epoch; with them it resumes
  at the last saved step and finishes that epoch's remaining batches (Lightning restarts the
  epoch's sampler sequence, and warns that the loader is not resumable).

Each is written to ``<name>.partial`` and renamed over the old file (``os.replace``), so a kill
mid-save leaves the previous checkpoint intact; then ``best.json`` / ``last.json`` beside it
are rewritten (epoch, global step, ``val_dice``, preprocessing hash, lungseg version).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn

from lungseg.core.console import progress_enabled
from lungseg.core.errors import RecipeError
from lungseg.core.recipe import MONITOR, Recipe
from lungseg.training.run_files import BEST, LAST, PARTIAL_SUFFIX, write_sidecar
from lungseg.training.trackers import TrackerArtifacts, tracker_loggers


def build_checkpoints(recipe: Recipe, output: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """The ``best.ckpt`` (by ``val_dice``) and ``last.ckpt`` callbacks (see the module doc).

    Returns:
        ``(best, last)`` callbacks.
    """
    folder = output / "checkpoints"
    return BestCheckpoint(folder), LastCheckpoint(folder, recipe.trainer.checkpoint_every_n_steps)


class _AtomicSave:
    """Write each checkpoint to ``<name>.partial``, rename it over ``<name>``, then its JSON.

    Mixed into :class:`~pytorch_lightning.callbacks.ModelCheckpoint` subclasses; replaces
    ``ModelCheckpoint._save_checkpoint`` (Lightning writes the final name in place, through a
    temporary file of the system's temp folder that may lie on another file system).
    """

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        partial = f"{filepath}{PARTIAL_SUFFIX}"
        trainer.save_checkpoint(partial, self.save_weights_only)  # type: ignore[attr-defined]
        if trainer.is_global_zero:
            if os.path.isdir(partial):  # a sharded strategy writes a folder
                shutil.rmtree(filepath, ignore_errors=True)
            os.replace(partial, filepath)
            module = trainer.lightning_module
            info = getattr(module, "saved_info", None)
            recipe = getattr(module, "recipe", None)
            if info is not None and isinstance(recipe, Recipe):
                write_sidecar(filepath, info, recipe)
        # no rank reads the old file after this
        trainer.strategy.barrier("lungseg.training.checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class BestCheckpoint(_AtomicSave, ModelCheckpoint):
    """``best.ckpt``: the epoch with the highest ``val_dice``, replaced when one beats it.

    Args:
        dirpath: the checkpoint folder.
    """

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=Path(BEST).stem,
            auto_insert_metric_name=False,
            monitor=MONITOR,
            mode="max",
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
        )


class LastCheckpoint(_AtomicSave, ModelCheckpoint):
    """``last.ckpt`` after every validation and, optionally, every N optimiser steps.

    Lightning's own ``save_last`` only refreshes ``last.ckpt`` when a top-k checkpoint was
    written (so after an epoch without a better Dice it would be stale), and takes step or
    epoch triggers, not both; this callback alone owns ``last.ckpt`` and overwrites it (no
    ``last-v1.ckpt`` when the folder already holds one).

    Args:
        dirpath: the checkpoint folder.
        every_n_train_steps: optimiser steps between saves (0: after validation only).
    """

    CHECKPOINT_NAME_LAST = Path(LAST).stem

    def __init__(self, dirpath: Path, every_n_train_steps: int = 0) -> None:
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps or None,
            enable_version_counter=False,
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def build_loggers(recipe: Recipe, output: Path) -> list[Logger]:
    """CSV (``<output>/logs/metrics.csv``), TensorBoard (``<output>/logs/tensorboard``), and
    the trackers (MLflow, W&B: :mod:`lungseg.training.trackers`), as ``trainer.loggers`` lists.

    Raises:
        RecipeError: a tracker's package is missing, or MLflow refuses its tracking URI.
    """
    loggers: list[Logger] = []
    if "csv" in recipe.trainer.loggers:
        loggers.append(CSVLogger(output, name="logs", version=""))
    if "tensorboard" in recipe.trainer.loggers:
        loggers.append(
            TensorBoardLogger(output, name="logs", version="tensorboard", default_hp_metric=False)
        )
    return loggers + tracker_loggers(recipe, output)


def keep_csv_history(loggers: list[Logger], before_step: int) -> None:
    """On resume, keep the CSV rows logged before the checkpoint (Lightning deletes the file).

    Args:
        loggers: the run's loggers; only a ``CSVLogger`` is touched, on global rank 0.
        before_step: the checkpoint's global step; later rows are logged again by the run.
    """
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        writer = logger.experiment  # creating it deletes the old file
        for row in rows:
            values: dict[str, float] = {
                k: int(float(v)) if k == "epoch" else float(v)
                for k, v in row.items()
                if k != "step" and v not in ("", None)
            }
            step = int(float(row.get("step") or 0))
            if values and step < before_step:
                writer.log_metrics(values, step)
        writer.save()


def build_trainer(
    recipe: Recipe, output: Path, callbacks: list[Callback] | None = None, **overrides: Any
) -> tuple[pl.Trainer, ModelCheckpoint, ModelCheckpoint]:
    """A ``Trainer`` configured by ``recipe.trainer``.

    Args:
        recipe: the run's recipe.
        output: the run directory.
        callbacks: extra callbacks (after the built-in ones).
        **overrides: further ``pl.Trainer`` arguments (tests and benchmarks).

    Returns:
        ``(trainer, best_checkpoint, last_checkpoint)``.

    The progress bar is on when ``trainer.enable_progress_bar`` and
    :func:`lungseg.core.console.progress_enabled` (stderr is a terminal, no ``-q``).

    Raises:
        RecipeError: a value Lightning rejects (``accelerator``, ``devices``, ``num_nodes``,
            ``strategy`` are Lightning's to check; the recipe checked the others), a
            tracker whose package is missing, or a tracking URI MLflow refuses.
    """
    t = recipe.trainer
    best, last = build_checkpoints(recipe, output)
    extra: list[Callback] = [best, last]
    if t.early_stopping_patience is not None:
        extra.append(EarlyStopping(MONITOR, patience=t.early_stopping_patience, mode="max"))
    loggers = build_loggers(recipe, output)
    trackers = [lg for lg in loggers if not isinstance(lg, CSVLogger | TensorBoardLogger)]
    if trackers:
        extra.append(TrackerArtifacts(best, trackers))
    if loggers and recipe.optimizer.scheduler != "none":
        extra.append(LearningRateMonitor(logging_interval="epoch"))
    precision = "32-true" if str(t.precision) == "32" else str(t.precision)
    kwargs: dict[str, Any] = {
        "max_epochs": t.max_epochs,
        "accelerator": t.accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": precision,
        "gradient_clip_val": t.gradient_clip_val,
        "accumulate_grad_batches": t.accumulate_grad_batches,
        "callbacks": extra + list(callbacks or []),
        "logger": loggers or False,
        "default_root_dir": output,
        "use_distributed_sampler": False,  # our samplers shard themselves correctly
        "log_every_n_steps": t.log_every_n_steps,
        "enable_progress_bar": t.enable_progress_bar and progress_enabled(),
        "enable_model_summary": False,
    }
    kwargs.update(overrides)
    try:
        trainer = pl.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        keys = "trainer.accelerator / devices / num_nodes / strategy / precision"
        raise RecipeError(f"{recipe.source_file}: {keys}: {str(exc).splitlines()[0]}") from None
    return trainer, best, last
