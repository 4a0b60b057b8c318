"""Finding, checking and safely loading checkpoints (never executing code stored in them).

A run keeps two checkpoints under fixed names, in ``<output>/checkpoints/``:

- ``best.ckpt``: the epoch with the highest validation Dice (``val_dice``) so far;
- ``last.ckpt``: the latest state (weights, optimiser, scheduler, epoch, step), for
  ``lungseg train --resume``.

Each is a Lightning checkpoint whose ``checkpoint["lungseg"]`` holds ``version``,
``recipe``, ``epoch``, ``global_step`` and ``val_dice`` (the Dice of the very weights in the
file; ``None`` for weights saved between validations). Beside each, ``best.json`` /
``last.json`` repeat the same numbers with the recipe's ``preprocess_hash``, so a person or a
script can see what a checkpoint is without loading it. Both files are replaced atomically.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lungseg.core.build import assemble
from lungseg.core.errors import CheckpointError, LungsegError
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.training.matching import check_matches
from lungseg.training.module import SegmentationModule
from lungseg.training.run_files import (
    BEST,
)

__all__ = [
    "check_matches",
    "find_best",
    "load_checkpoint",
    "read_checkpoint",
    "stored_recipe",
]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9"  # the older pickle format's magic number


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, from its first bytes (``None``: it may be)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LEGACY_MAGIC))
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not head:
        return "empty file"
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC:
        return None
    return "not a PyTorch checkpoint file"


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint file with ``weights_only=True`` (no pickled code runs).

    Args:
        path: the ``.ckpt`` file.
        map_location: where tensors go.
        mmap: map tensors from the file instead of reading them (cheap look at metadata).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: missing, empty, not a PyTorch file, truncated or corrupt, holding
            pickled objects other than tensors and plain data, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    why = _not_a_checkpoint(path)
    if why:
        raise CheckpointError(f"{path}: not a lungseg checkpoint ({why})")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        line = next((ln for ln in text.splitlines()[1:] if "GLOBAL" in ln), "")
        detail = line.split("error:", 1)[-1].strip().split(". ")[0].rstrip(".")
        if not detail and "Weights only load failed" not in text:
            raise CheckpointError(
                f"{path}: not a lungseg checkpoint (corrupt: {text.splitlines()[0]})"
            ) from None
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds objects other than tensors and plain data "
            f"(loading it could run code). Only load checkpoints you trust."
            + (f" ({detail})" if detail else "")
        ) from None
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"{path}: not a lungseg checkpoint (truncated or corrupt file: {first})"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path}: not a lungseg checkpoint (holds a {type(raw).__name__}, not a checkpoint)"
        )
    return raw


def stored_recipe(raw: dict[str, Any], path: str | os.PathLike) -> Recipe:
    """The recipe a checkpoint (read by :func:`read_checkpoint`) was trained with.

    Raises:
        CheckpointError: no lungseg recipe inside, or one this version cannot read.
    """
    info = raw.get("lungseg")
    recipe_dict = info.get("recipe") if isinstance(info, dict) else None
    if recipe_dict is None:
        raise CheckpointError(
            f"{path}: has no lungseg recipe (made by another tool or version); "
            "retrain with `lungseg train` to get a self-describing checkpoint"
        )
    try:
        return recipe_from_dict(recipe_dict, source=f"{path} (stored recipe)")
    except LungsegError as exc:
        raise CheckpointError(f"{path}: its stored recipe is unusable: {exc}") from None


def find_best(output: str | os.PathLike) -> Path:
    """The best checkpoint of a run directory: ``<output>/checkpoints/best.ckpt``.

    The file is checked (present, not empty, a PyTorch file) but not loaded.

    Raises:
        CheckpointError: no ``best.ckpt`` there, or it is not a checkpoint.
    """
    folder = Path(output, "checkpoints")
    path = folder / BEST
    if not path.is_file():
        old = sorted(p.name for p in folder.glob("best-*.ckpt")) if folder.is_dir() else []
        hint = (
            f" (it holds {old[0]}{' and more' if len(old) > 1 else ''} from an older lungseg: "
            "name one with --checkpoint)"
            if old
            else ""
        )
        raise CheckpointError(f"{path}: no best checkpoint{hint}; run `lungseg train RECIPE` first")
    why = _not_a_checkpoint(path)
    if why:
        raise CheckpointError(
            f"{path}: not a lungseg checkpoint ({why}); run `lungseg train RECIPE --overwrite` "
            "to train it again"
        )
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[SegmentationModule, Recipe]:
    """Load a module and its recipe with ``weights_only=True`` (no pickled code runs).

    The network is built from the stored recipe and must take the stored weights exactly.

    Raises:
        CheckpointError: missing file, unsafe or corrupt content, no lungseg recipe inside,
            or weights that do not fit the model the stored recipe describes.
    """
    path = Path(path)
    raw = read_checkpoint(path, map_location=map_location)
    recipe = stored_recipe(raw, path)
    state = raw.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a lungseg checkpoint (no state_dict of weights)")
    try:
        module = assemble(recipe).module()
    except LungsegError as exc:
        raise CheckpointError(f"{path}: cannot build its stored model: {exc}") from None
    _load_weights(module, state, path, recipe)
    module.to(map_location)
    module.eval()
    return module, recipe


def _load_weights(
    module: SegmentationModule, state: dict[str, Any], path: Path, recipe: Recipe
) -> None:
    """``module.load_state_dict(state)``, a mismatch as one clear :class:`CheckpointError`."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = lines[0] if lines else str(exc).splitlines()[0]
        raise CheckpointError(
            f"{path}: its weights do not fit the model of its stored recipe "
            f"(model: {recipe.model.to_dict()}): {detail.rstrip('.')}. The file was altered or "
            "mixed from two runs; use another checkpoint or retrain"
        ) from None
