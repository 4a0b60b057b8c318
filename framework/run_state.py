"""What an earlier ``lungseg run`` left finished, for ``lungseg run --resume``.

Each stage is judged from what lungseg itself records:

- training: ``checkpoints/last.json`` (written beside ``last.ckpt``, :mod:`lungseg.training.
  run_files`) holds the epoch and ``val_dice`` of the saved state; a run saved after the
  validation of its final epoch (``trainer.max_epochs``), or whose ``split.json`` (written when
  training returns) is newer than ``last.ckpt`` (early stopping), is finished; one with a
  ``last.ckpt`` and neither is interrupted and resumes from it.
- evaluation: ``metrics.json`` and ``per_case.csv`` exist, ``metrics.json`` names the same
  best checkpoint (the run folder for k-fold) and is newer than it.
- predictions: the mask of each unlabelled scan exists and is newer than the checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lungseg.core.errors import OutputError
from lungseg.core.recipe import Recipe
from lungseg.training.run_files import BEST, LAST, sidecar_path

Training = Literal["none", "interrupted", "finished"]


def training_state(recipe: Recipe) -> Training:
    """Whether the run in ``recipe.output`` (one fold's folder for k-fold) trained to the end.

    Returns:
        ``"none"`` (no ``last.ckpt``: train afresh), ``"interrupted"`` (resume from
        ``last.ckpt``) or ``"finished"`` (keep ``best.ckpt`` and ``last.ckpt`` as they are).
    """
    output = Path(recipe.output)
    last = output / "checkpoints" / LAST
    if not last.is_file():
        return "none"
    if not (output / "checkpoints" / BEST).is_file():
        return "interrupted"  # killed before its first validation finished
    info = _read_json(sidecar_path(last))
    epoch = info.get("epoch")
    validated = info.get("val_dice") is not None and isinstance(epoch, int)
    if validated and epoch >= recipe.trainer.max_epochs - 1:
        return "finished"  # saved after validating the final epoch
    split = output / "split.json"  # written once training has returned
    if split.is_file() and split.stat().st_mtime_ns >= last.stat().st_mtime_ns:
        return "finished"  # stopped early (trainer.early_stopping_patience)
    return "interrupted"


def evaluation_done(recipe: Recipe, checkpoints: Sequence[str | Path]) -> bool:
    """Whether ``recipe.output`` holds a complete validation evaluation of ``checkpoints``.

    Args:
        recipe: the run's recipe (the k-fold folder's for k-fold).
        checkpoints: the best checkpoint, or every fold's for k-fold.

    Returns:
        ``False`` when no evaluation finished (none, or one interrupted before
        ``per_case.csv``): it is (re)done.

    Raises:
        OutputError: a finished evaluation of other or older checkpoints (made by
            ``lungseg evaluate`` while training was unfinished): ``--resume`` never replaces
            it; the message says how.
    """
    out = Path(recipe.output)
    metrics = out / "metrics.json"
    if not (metrics.is_file() and (out / "per_case.csv").is_file()):
        return False
    recorded = _read_json(metrics)
    expected = str(checkpoints[0]) if recipe.split.folds == 1 else str(recipe.output)
    newest = max(Path(c).stat().st_mtime_ns for c in checkpoints)
    if _same_path(recorded.get("checkpoint"), expected) and metrics.stat().st_mtime_ns >= newest:
        return True
    raise OutputError(
        f"{metrics}: evaluates another or an older checkpoint than {expected}; replace it with "
        f"`lungseg evaluate {recipe.source_file or 'RECIPE'} --overwrite`, then run again with "
        "--resume"
    )


def missing_predictions(
    scans: Sequence[Path], folder: Path, checkpoints: Sequence[str | Path]
) -> list[Path]:
    """The scans whose mask in ``folder`` is not written yet (all when ``folder`` is missing).

    Raises:
        OutputError: a mask older than the checkpoints (an earlier model's): never replaced
            by ``--resume``.
    """
    newest = max(Path(c).stat().st_mtime_ns for c in checkpoints)
    missing = []
    for scan in scans:
        mask = folder / scan.name
        if not mask.is_file():
            missing.append(scan)
        elif mask.stat().st_mtime_ns < newest:
            raise OutputError(
                f"{mask}: predicted by an older checkpoint than {checkpoints[0]}; run "
                "`lungseg predict` with --overwrite to replace it, or delete it, then run again "
                "with --resume"
            )
    return missing


def _same_path(recorded: object, expected: str) -> bool:
    """Whether a recorded path names ``expected`` (one may be relative, the other absolute)."""
    if not isinstance(recorded, str) or not recorded:
        return False
    return recorded == expected or Path(recorded).resolve() == Path(expected).resolve()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
