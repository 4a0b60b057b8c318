"""Several trained networks as one: the mean of their probabilities, for ``predict`` and folds.

:class:`Ensemble` wraps the members' networks and returns ``logit(mean(sigmoid(logits)))``, so
the :class:`~lungseg.inference.predictor.Predictor` (which applies the sigmoid) yields the mean
probability, and flip TTA, the inverse chain, the threshold and post-processing work on it
unchanged. Members must share their preprocessing chain and slice context
(``data.context``): they see the same input slices.

:func:`resolve_checkpoints` turns what ``--checkpoint`` names (checkpoint files, a run folder,
a k-fold run folder) into checkpoint files; :func:`load_predictor` builds the predictor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from lungseg.core.errors import CheckpointError
from lungseg.core.recipe import Recipe
from lungseg.inference.predictor import Predictor
from lungseg.training.checkpoint import load_checkpoint, read_checkpoint, stored_recipe
from lungseg.training.folds import fold_dir, fold_folders
from lungseg.training.run_files import BEST

__all__ = ["Ensemble", "load_predictor", "resolve_checkpoints"]


class Ensemble(nn.Module):
    """Networks averaged in probability: ``logit(mean_i(sigmoid(member_i(x))))``.

    Args:
        members: networks mapping ``(N, C, H, W)`` images to ``(N, 1, H, W)`` logits. One
            member is returned as it is (its logits unchanged).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](x)
        mean = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(dim=0)
        return torch.logit(mean)  # +-inf where every member is saturated: sigmoid maps it back


def run_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints a run folder stands for: every fold's ``best.ckpt``, or its own.

    Raises:
        CheckpointError: no checkpoint, a fold without ``best.ckpt`` (or a fold of the
            recipe's ``split.folds`` missing), or both fold folders and a ``best.ckpt`` of
            its own (ambiguous).
    """
    own = folder / "checkpoints" / BEST
    folds = fold_folders(folder)
    if not folds:
        if own.is_file():
            return [own]
        raise CheckpointError(
            f"{folder}: neither checkpoints/{BEST} nor fold_<k>/checkpoints/{BEST}; train it "
            "with `lungseg train RECIPE` (or --fold all) or name a .ckpt file"
        )
    if own.is_file():
        raise CheckpointError(
            f"{folder}: holds both its own checkpoints/{BEST} and fold folders; name the "
            f"checkpoint files to use with --checkpoint"
        )
    expected = range(_recipe_folds(folder) or max(folds) + 1)
    missing = [k for k in expected if not (fold_dir(folder, k) / "checkpoints" / BEST).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder}: fold(s) {', '.join(map(str, missing))} have no checkpoints/{BEST}; "
            "train them with `lungseg train RECIPE --fold all --resume`, or name the "
            "checkpoint files to use with --checkpoint"
        )
    return [fold_dir(folder, k) / "checkpoints" / BEST for k in expected]


def _recipe_folds(folder: Path) -> int | None:
    """``split.folds`` of the run folder's ``recipe.yaml`` (``None`` if unreadable)."""
    try:
        raw = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
        folds = raw["split"]["folds"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return folds if isinstance(folds, int) and folds >= 1 else None


def resolve_checkpoints(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Checkpoint files for ``--checkpoint`` values: files as given, run folders expanded.

    A run folder stands for its ``checkpoints/best.ckpt``; a k-fold run folder for every
    fold's ``fold_<k>/checkpoints/best.ckpt``. A file named twice counts once.

    Raises:
        CheckpointError: nothing named, or a folder without checkpoints.
    """
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        for ckpt in run_checkpoints(path) if path.is_dir() else [path]:
            if all(ckpt.resolve() != seen.resolve() for seen in found):
                found.append(ckpt)
    if not found:
        raise CheckpointError("--checkpoint: name at least one checkpoint file or run folder")
    return found


def _check_members(paths: list[Path]) -> Recipe:
    """Refuse members whose preprocessing chain or context differ (before loading weights).

    Returns:
        The first member's recipe.

    Raises:
        CheckpointError: unreadable checkpoint, or naming both checkpoints and what differs.
    """
    recipes = [stored_recipe(read_checkpoint(p, mmap=True), p) for p in paths]
    return check_same_inputs(paths, recipes)


def check_same_inputs(paths: Sequence[str | os.PathLike], recipes: Sequence[Recipe]) -> Recipe:
    """Ensemble members (checkpoints or ONNX exports) must see the same slices.

    Args:
        paths: the members, for messages.
        recipes: their recipes, in the same order.

    Returns:
        The first member's recipe.

    Raises:
        CheckpointError: naming both members and the preprocessing chains or ``data.context``
            that differ.
    """
    first = recipes[0]
    for path, other in zip(paths[1:], recipes[1:], strict=True):
        if other.preprocess_hash() != first.preprocess_hash():
            raise CheckpointError(
                f"{paths[0]} and {path}: trained with different preprocessing chains "
                f"({first.preprocess_dict()} vs {other.preprocess_dict()}); an ensemble "
                "averages members that see the same slices: leave one out"
            )
        if other.data.context != first.data.context:
            raise CheckpointError(
                f"{paths[0]} and {path}: trained with different data.context "
                f"({first.data.context} vs {other.data.context}); an ensemble averages "
                "members that see the same slices: leave one out"
            )
    return first


def load_predictor(
    checkpoints: Sequence[str | os.PathLike], *, engine: str = "torch", **settings: Any
) -> tuple[Predictor, Recipe]:
    """The predictor of one checkpoint, or of the ensemble of several (mean probability).

    ``checkpoints`` go through :func:`resolve_checkpoints`. Unset settings come from the
    first member's recipe, as :meth:`Predictor.from_checkpoint` takes them; one checkpoint
    gives exactly :meth:`Predictor.from_checkpoint`'s predictor.

    Args:
        checkpoints: checkpoint files, or run folders (see :func:`resolve_checkpoints`);
            with ``engine="onnx"``, ``.onnx`` files from ``lungseg export``.
        engine: ``torch`` (checkpoints), or ``onnx`` (onnxruntime runs the exported network,
            :func:`~lungseg.inference.onnx_engine.load_onnx_predictor`).
        **settings: ``threshold``, ``batch_size``, ``device``, ``tta``, ``postprocessors``,
            as :meth:`Predictor.from_checkpoint` takes them.

    Returns:
        The predictor, and the first member's recipe.

    Raises:
        CheckpointError: a missing, unsafe or unreadable checkpoint, or members trained
            with different preprocessing chains or ``data.context``.
        RecipeError: an unknown postprocessor name or parameter.
    """
    if engine == "onnx":
        from lungseg.inference.onnx_engine import load_onnx_predictor

        return load_onnx_predictor(list(dict.fromkeys(map(Path, checkpoints))), **settings)
    paths = resolve_checkpoints(checkpoints)
    if len(paths) > 1:
        _check_members(paths)
    predictor, recipe = Predictor.from_checkpoint(paths[0], **settings)
    if len(paths) > 1:
        others = [load_checkpoint(p)[0].model for p in paths[1:]]
        predictor.model = Ensemble([predictor.model, *others])
    return predictor, recipe
