"""Post-processing chosen by measurement, as nnU-Net chooses it.

``lungseg evaluate`` (validation or out-of-fold) hands every case's thresholded mask, before
any post-processing, to a :class:`PostSelection`. It tries every registered postprocessor
(the registry's ``postprocessor`` kind, with its default parameters) on that mask and scores
it with the ``dice`` metric plugin; the masks and probabilities are computed once, only the
post-processing and the scoring repeat per candidate. A candidate is chosen when it raises
the mean per-case Dice over cases with tumour by at least :data:`MARGIN`; several are
combined greedily (the best one first, each further one kept only if the combination gains
:data:`MARGIN` again, measured in a second pass over the masks and labels kept as bits, which
re-reads only the scans).

The result goes into ``metrics.json`` as ``postprocess_selection``; ``lungseg predict
--postprocess auto`` reads it back (:func:`recorded_choice`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.build import Parts
from lungseg.core.errors import CheckpointError, LungsegError
from lungseg.core.recipe import Component
from lungseg.data.volume import read_image
from lungseg.inference.predictor import postprocess
from lungseg.inference.scoring import PRIMARY, nanmean

__all__ = ["MARGIN", "PostSelection", "recorded_choice"]

MARGIN = 0.001
"""A candidate must raise the mean per-case Dice by at least this much to be chosen."""

DEFINITION = (
    "each registered postprocessor (default parameters) applied alone to the thresholded "
    "masks before any post-processing; value: mean over cases with tumour of the 3D Dice "
    "(metric plugin 'dice'); baseline: no post-processing; chosen: applied in this order by "
    "`lungseg predict --postprocess auto`, each kept only if it raised the mean by >= margin"
)


@dataclass
class _Kept:
    """What the second pass needs of a case: mask and label packed to bits, the scan's path."""

    mask: np.ndarray
    truth: np.ndarray
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    image_path: str

    def unpack(self, bits: np.ndarray) -> np.ndarray:
        size = int(np.prod(self.shape))
        return np.unpackbits(bits, count=size).astype(bool).reshape(self.shape)


class PostSelection:
    """Scores candidate postprocessors on the cases it is given; see the module doc.

    Args:
        candidates: postprocessors by name, ``post(mask, image, spacing) -> mask``.
        dice: the ``dice`` metric plugin, ``dice(pred, truth, spacing) -> float``.
        skipped: candidates that could not be built, with the reason (recorded as such).
    """

    def __init__(
        self,
        candidates: dict[str, Any],
        dice: Callable[..., float],
        skipped: dict[str, str] | None = None,
    ) -> None:
        self.posts = dict(candidates)
        self.dice = dice
        self.skipped = dict(skipped or {})
        self.baseline: list[float] = []
        self.scores: dict[str, list[float]] = {name: [] for name in self.posts}
        self.kept: list[_Kept] = []

    @classmethod
    def from_registry(cls, parts: Parts, dice: Callable[..., float]) -> PostSelection:
        """Every registered postprocessor, with its default parameters, as a candidate."""
        posts, skipped = {}, {}
        for entry in parts.plugins.entries("postprocessor"):
            try:
                posts[entry.name] = parts.postprocessors([Component(entry.name)])[0]
            except LungsegError as exc:  # a postprocessor without defaults for its parameters
                skipped[entry.name] = str(exc)
        return cls(posts, dice, skipped)

    def add(
        self,
        mask: np.ndarray,
        truth: np.ndarray,
        image: np.ndarray,
        spacing: tuple[float, ...],
        image_path: str,
    ) -> None:
        """Score one case: its mask before post-processing, its label, scan and spacing.

        Cases without tumour are left out (their Dice does not enter ``mean_case_dice``).
        ``image_path`` (the scan ``image`` was read from) is read again by the second pass.
        """
        if not truth.any():
            return
        self.baseline.append(float(self.dice(mask, truth, spacing)))
        for name, post in self.posts.items():
            self.scores[name].append(float(self.dice(post(mask, image, spacing), truth, spacing)))
        bits = np.packbits(mask), np.packbits(truth)
        self.kept.append(_Kept(*bits, mask.shape, tuple(spacing), str(image_path)))

    def _chain_dice(self, names: list[str]) -> float | None:
        """Mean Dice of the kept cases with ``names`` applied in order (the second pass)."""
        posts = [self.posts[n] for n in names]
        values = []
        for case in self.kept:
            mask, truth = case.unpack(case.mask), case.unpack(case.truth)
            image = read_image(case.image_path)[0]
            after = postprocess(mask, image, case.spacing, posts)
            values.append(float(self.dice(after, truth, case.spacing)))
        return nanmean(values)

    def result(self) -> dict[str, Any]:
        """``postprocess_selection`` for ``metrics.json``."""
        baseline = nanmean(self.baseline)
        candidates = {name: nanmean(values) for name, values in self.scores.items()}
        gaining = sorted(
            (n for n, v in candidates.items() if _gains(v, baseline)),
            key=lambda n: -candidates[n],
        )
        chosen, best, combined = gaining[:1], candidates[gaining[0]] if gaining else baseline, {}
        for name in gaining[1:]:
            score = self._chain_dice([*chosen, name])
            combined[" + ".join([*chosen, name])] = score
            if _gains(score, best):
                chosen, best = [*chosen, name], score
        return {
            "candidates": candidates,
            "baseline": baseline,
            "combinations": combined,
            "chosen": chosen,
            "chosen_dice": best,
            "margin": MARGIN,
            "metric": PRIMARY,
            "cases": len(self.baseline),
            "skipped": self.skipped,
            "definition": DEFINITION,
        }


def _gains(value: float | None, reference: float | None) -> bool:
    return value is not None and reference is not None and value - reference >= MARGIN


def _places(checkpoints: Sequence[str | os.PathLike]) -> list[Path]:
    """Where the ``metrics.json`` for ``checkpoints`` may be, in order of preference."""
    from lungseg.inference.ensemble import resolve_checkpoints
    from lungseg.training.folds import FOLD_PREFIX

    if len(checkpoints) == 1 and Path(checkpoints[0]).is_dir():
        return [Path(checkpoints[0]) / "metrics.json"]
    runs = {p.parent.parent for p in resolve_checkpoints(checkpoints)}  # run/checkpoints/x.ckpt
    if len(runs) == 1:
        (run,) = runs
        places = [run / "metrics.json"]
        if run.name.startswith(FOLD_PREFIX):
            places.append(run.parent / "metrics.json")
        return places
    parents = {run.parent for run in runs}
    if len(parents) == 1 and all(run.name.startswith(FOLD_PREFIX) for run in runs):
        return [parents.pop() / "metrics.json"]
    return []


def recorded_choice(checkpoints: Sequence[str | os.PathLike]) -> tuple[list[Component], Path]:
    """The post-processing an evaluation chose for ``checkpoints`` (``--postprocess auto``).

    The choice is read from the ``metrics.json`` of the run folder the checkpoints belong to
    (a k-fold run folder for fold checkpoints; for one fold's checkpoint its own folder's
    first, if that fold was evaluated alone).

    Returns:
        The chosen postprocessors (possibly none), and the ``metrics.json`` they came from.

    Raises:
        CheckpointError: no ``metrics.json`` with a ``postprocess_selection`` there.
    """
    places = _places(checkpoints)
    for path in places:
        try:
            selection = json.loads(path.read_text(encoding="utf-8"))["postprocess_selection"]
            return [Component(name) for name in selection["chosen"]], path
        except (OSError, ValueError, KeyError, TypeError):
            continue
    where = " or ".join(map(str, places)) or "the run folder of the checkpoints"
    raise CheckpointError(
        f"--postprocess auto: no postprocess_selection in {where}; run `lungseg evaluate "
        "RECIPE` on the run first (it records the choice), or name postprocessors"
    )
