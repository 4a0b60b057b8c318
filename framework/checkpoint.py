"""Finding and safely loading checkpoints (never executing code stored in them)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from lungseg.errors import CheckpointError
from lungseg.module import SegmentationModule
from lungseg.recipe import Recipe, recipe_from_dict


def find_best(output: str | os.PathLike) -> Path:
    """The best checkpoint of a run directory (``checkpoints/best-*.ckpt``).

    Raises:
        CheckpointError: none there.
    """
    found = sorted(Path(output, "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise CheckpointError(
            f"{Path(output, 'checkpoints')}: no best checkpoint; run `lungseg train RECIPE` first"
        )
    return found[-1]


def load_checkpoint(
    path: str | os.PathLike, map_location: str = "cpu"
) -> tuple[SegmentationModule, Recipe]:
    """Load a module and its recipe with ``weights_only=True`` (no pickled code runs).

    Raises:
        CheckpointError: missing file, unsafe or corrupt content, no lungseg recipe inside.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds objects other than tensors and plain data "
            f"(loading it could run code). Only load checkpoints you trust. "
            f"({str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    recipe_dict = (raw.get("lungseg") or {}).get("recipe") if isinstance(raw, dict) else None
    if recipe_dict is None:
        raise CheckpointError(
            f"{path}: has no lungseg recipe (made by another tool or version); "
            "retrain with `lungseg train` to get a self-describing checkpoint"
        )
    module = SegmentationModule.load_from_checkpoint(
        path, map_location=map_location, weights_only=True
    )
    module.eval()
    return module, recipe_from_dict(recipe_dict, source=f"{path} (stored recipe)")
