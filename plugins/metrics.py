"""Default metrics on binary 3D masks in a case's own geometry.

Each documents its empty-mask rule; ``nan`` means undefined and is left out of means.
"""

from __future__ import annotations

import numpy as np

from lungseg import hookimpl
from lungseg.metrics import dice_from_counts, overlap


def dice():
    """Dice = 2|P∩T| / (|P|+|T|); nan when prediction and truth are both empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] = ()) -> float:
        return dice_from_counts(*overlap(pred, truth))

    return metric


def iou():
    """IoU (Jaccard) = |P∩T| / |P∪T|; nan when prediction and truth are both empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] = ()) -> float:
        inter, p, t = overlap(pred, truth)
        union = p + t - inter
        return float("nan") if union == 0 else inter / union

    return metric


@hookimpl
def lungseg_add_metrics(registry) -> None:
    registry.add("dice", dice)
    registry.add("iou", iou)
