"""Overlap counting shared by the metric plugins and the training loop."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Metric(Protocol):
    """A metric plugin: ``metric(pred, truth, spacing) -> float`` on boolean 3D arrays."""

    def __call__(
        self, pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
    ) -> float: ...


def overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """``(|P and T|, |P|, |T|)`` of two boolean arrays of one shape."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    pred = pred.astype(bool, copy=False)
    truth = truth.astype(bool, copy=False)
    return (
        int(np.count_nonzero(pred & truth)),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(truth)),
    )


def dice_from_counts(inter: float, pred: float, truth: float) -> float:
    """Dice ``2|P∩T| / (|P| + |T|)``; ``nan`` when both are empty (undefined)."""
    total = pred + truth
    return float("nan") if total == 0 else 2.0 * inter / total
