"""``lungseg train``: Lightning training with the best-Dice and last checkpoints.

Safe under every launcher: run directly, under ``torchrun`` / ``srun`` (every rank starts the
same command) or Lightning's own DDP launcher (which re-runs the command line in child
processes). Data preparation happens once per job, on global rank 0, in
``SliceDataModule.prepare_data``; only global rank 0 writes the recipe and the split.

A run folder is never reused by accident: a new ``train`` into an output whose
``checkpoints/`` already holds checkpoints is refused unless ``resume`` (continue it) or
``overwrite`` (delete lungseg's checkpoint files first) is given, and ``resume`` refuses a
``last.ckpt`` trained with another preprocessing chain or model.

With ``split.folds`` > 1 (k-fold cross-validation, :mod:`lungseg.training.folds`) the recipe's
output is a k-fold run folder: it holds the recipe and one ordinary run folder per fold,
``fold_<k>/``, and :func:`train` trains one fold into its folder (``--resume`` and
``--overwrite`` act on that fold only); :func:`train_folds` trains several in turn.
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
from lungseg.core.recipe_trackers import check_trackers
from lungseg.core.safety import claim_dir
from lungseg.training.checkpoint import check_matches, read_checkpoint, stored_recipe
from lungseg.training.dataset import SliceDataModule
from lungseg.training.folds import FoldSplitCheck, fold_parts
from lungseg.training.module import SegmentationModule
from lungseg.training.run_files import LAST, clear_checkpoints
from lungseg.training.trainer import build_trainer, keep_csv_history

__all__ = ["TrainResult", "build_trainer", "launch_rank", "train", "train_folds"]


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


def _enter_fold(parts: Parts, fold: int | None) -> Parts:
    """The parts of one fold of a k-fold recipe, its k-fold run folder claimed (rank 0).

    Raises:
        RecipeError: the recipe has one split only, or ``fold`` is out of range.
        OutputError: the k-fold folder holds files lungseg did not make.
    """
    one = fold_parts(parts, fold)  # checks the fold before anything is written
    if launch_rank() == 0:
        claim_dir(parts.recipe.output, "run", role="output")
    return one


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
    fold: int | None = None,
) -> TrainResult:
    """Train the recipe's model; with ``resume`` continue from ``checkpoints/last.ckpt``.

    With ``split.folds`` > 1 this trains one fold (``fold``, default ``split.fold``) into
    ``<output>/fold_<fold>/``, an ordinary run folder (``resume`` and ``overwrite`` apply to it
    alone), and writes the recipe to ``<output>/recipe.yaml``.

    Args:
        recipe: the run's recipe, or its assembled parts (:mod:`lungseg.core.build`).
        resume: restore weights, optimiser, LR scheduler, epoch and global step from
            ``<output>/checkpoints/last.ckpt`` and train on to ``trainer.max_epochs``.
        overwrite: start afresh in an output that already holds checkpoints: delete
            lungseg's checkpoint files there first (``best.ckpt``, ``last.ckpt``, their
            JSONs, older ``best-*.ckpt``), nothing else.
        callbacks: extra Lightning callbacks.
        fold: with ``split.folds`` > 1, the fold to train (default: ``split.fold``).

    Returns:
        Paths of the best and last checkpoints (``output``: the fold's folder for a fold).

    Raises:
        OutputError: the output is not a lungseg run folder, or (without ``resume`` or
            ``overwrite``) its ``checkpoints/`` holds checkpoints already.
        CheckpointError: ``resume`` without a last checkpoint, or with one that is unreadable
            or was trained with another preprocessing chain or model.
        RecipeError: a trainer value Lightning rejects, or ``fold`` given while
            ``split.folds`` is 1 or out of ``[0, split.folds)``.
    """
    _quiet_lightning()
    parts = assemble(recipe)
    check_trackers(parts.recipe)  # a missing tracker package, before anything is written
    if resume and overwrite:
        raise OutputError(
            "--resume continues the run in output and --overwrite replaces it: pass only one"
        )
    top = parts.recipe
    folded = top.split.folds > 1 or fold is not None
    if folded:
        parts = _enter_fold(parts, fold)
    recipe = parts.recipe
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
    if folded:
        _save_recipe(top, Path(top.output))
    _save_recipe(recipe, output)
    datamodule = SliceDataModule(parts)
    extra = [*(callbacks or []), FoldSplitCheck(recipe)] if folded else callbacks
    trainer, best, last_cb = build_trainer(recipe, output, extra)
    if raw is not None and rank0:
        keep_csv_history(trainer.loggers, int(raw.get("global_step", 0)))
    del raw
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if trainer.is_global_zero:
        datamodule.write_split(output)
    return TrainResult(
        best.best_model_path, last_cb.last_model_path, output, trainer.is_global_zero
    )


def train_folds(
    recipe: Recipe | Parts,
    folds: list[int] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
) -> list[TrainResult]:
    """Train several folds of a k-fold recipe in turn, each into ``<output>/fold_<k>/``.

    Args:
        recipe: a recipe with ``split.folds`` > 1, or its assembled parts.
        folds: the folds to train (default: all of them, in order).
        resume: continue each fold that has a ``last.ckpt`` and start the others afresh, so
            a ``--fold all`` run killed in its third fold goes on where it stopped.
        overwrite: replace each fold's earlier checkpoints.
        callbacks: extra Lightning callbacks, for every fold.

    Returns:
        One :class:`TrainResult` per fold, in order.

    Raises:
        RecipeError: ``split.folds`` is 1, or a fold out of range.
    """
    parts = assemble(recipe)
    chosen = list(range(parts.recipe.split.folds)) if folds is None else list(folds)
    for k in chosen:
        fold_parts(parts, k)  # every fold checked before the first one trains
    results = []
    for k in chosen:
        last = Path(fold_parts(parts, k).recipe.output) / "checkpoints" / LAST
        again = resume and last.is_file()
        one = train(parts, resume=again, overwrite=overwrite, callbacks=callbacks, fold=k)
        results.append(one)
    return results
