"""The files a run keeps in ``<output>/checkpoints``: fixed names, JSON sidecars, clearing.

``best.ckpt`` and ``last.ckpt`` (see :mod:`lungseg.training.checkpoint`), each with a JSON
beside it repeating its epoch, step, score and chain hash; both written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lungseg.core.recipe import Recipe

BEST = "best.ckpt"
"""File name of the best-``val_dice`` checkpoint in ``<output>/checkpoints``."""

LAST = "last.ckpt"
"""File name of the latest checkpoint in ``<output>/checkpoints``."""

PARTIAL_SUFFIX = ".partial"
"""A checkpoint is written to ``<name>.partial`` and then renamed over ``<name>``."""


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """The JSON beside a checkpoint: ``best.ckpt`` -> ``best.json``."""
    return Path(checkpoint).with_suffix(".json")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_sidecar(checkpoint: str | os.PathLike, info: dict[str, Any], recipe: Recipe) -> Path:
    """Write ``best.json`` / ``last.json`` beside a checkpoint, atomically.

    Args:
        checkpoint: the checkpoint file just written.
        info: its ``checkpoint["lungseg"]`` without the recipe (``version``, ``epoch``,
            ``global_step``, ``val_dice``).
        recipe: the run's recipe (for ``preprocess_hash``).

    Returns:
        The JSON file's path.
    """
    path = sidecar_path(checkpoint)
    content = {
        "checkpoint": Path(checkpoint).name,
        "epoch": info.get("epoch"),
        "global_step": info.get("global_step"),
        "val_dice": info.get("val_dice"),
        "preprocess_hash": recipe.preprocess_hash(),
        "lungseg_version": info.get("version"),
    }
    _write_atomic(path, json.dumps(content, indent=2) + "\n")
    return path


def made_by_lungseg(folder: str | os.PathLike) -> list[Path]:
    """The files of a checkpoint folder that lungseg writes (and ``--overwrite`` may delete).

    ``best.ckpt``, ``last.ckpt``, their JSONs, unfinished ``*.partial`` writes of them and
    the ``best-epochNNN-diceD.DDDD.ckpt`` files of older lungseg versions; nothing else.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = {BEST, LAST, sidecar_path(BEST).name, sidecar_path(LAST).name}
    names |= {n + PARTIAL_SUFFIX for n in list(names)}
    found = [p for p in folder.iterdir() if p.name in names and p.is_file()]
    found += [p for p in folder.glob("best-*.ckpt") if p.is_file()]
    return sorted(found)


def clear_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Delete the files :func:`made_by_lungseg` lists (for ``train --overwrite``).

    Returns:
        The deleted paths.
    """
    removed = made_by_lungseg(folder)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
