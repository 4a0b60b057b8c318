"""Default metrics on binary 3D masks in a case's own geometry.

Every metric is ``metric(pred, truth, spacing) -> float`` on boolean ``(X, Y, Z)`` arrays of
one shape, ``spacing`` in mm per axis. Each documents its formula and its empty-mask rule;
``nan`` means undefined and is left out of means.
"""

from __future__ import annotations

import numpy as np

from lungseg import hookimpl
from lungseg.api import components, dice_from_counts, overlap, surface_distances

Spacing = tuple[float, ...]


def dice():
    """Dice = 2|P∩T| / (|P|+|T|); nan when prediction and truth are both empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        return dice_from_counts(*overlap(pred, truth))

    return metric


def iou():
    """IoU (Jaccard) = |P∩T| / |P∪T|; nan when prediction and truth are both empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        inter, p, t = overlap(pred, truth)
        union = p + t - inter
        return float("nan") if union == 0 else inter / union

    return metric


def precision():
    """Precision = |P∩T| / |P|; nan when the prediction is empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        inter, p, _ = overlap(pred, truth)
        return float("nan") if p == 0 else inter / p

    return metric


def recall():
    """Recall (sensitivity) = |P∩T| / |T|; nan when the truth is empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        inter, _, t = overlap(pred, truth)
        return float("nan") if t == 0 else inter / t

    return metric


def hd95():
    """HD95 (mm): max of the 95th-percentile surface distances P->T, T->P; nan if P or T empty.

    Surfaces and distances as in :func:`lungseg.api.surface_distances` (spacing in mm).
    """

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from truth {truth.shape}")
        if not pred.any() or not truth.any():
            return float("nan")
        d_pt, d_tp = surface_distances(pred, truth, spacing or (1.0,) * pred.ndim)
        return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))

    return metric


def nsd(tolerance: float = 2.0):
    """Normalised surface Dice at ``tolerance`` mm (the MSD challenge's second ranking metric).

    NSD = (|{p in S_P: d(p, S_T) <= tau}| + |{t in S_T: d(t, S_P) <= tau}|) / (|S_P| + |S_T|):
    the share of both surfaces lying within ``tau`` mm of the other surface, with surfaces and
    distances as in :func:`lungseg.api.surface_distances` (surface voxels, each counted once;
    spacing in mm). 1 for identical masks, 0 when one mask is empty, nan when both are.

    Args:
        tolerance: ``tau`` in mm (default 2 mm, the MSD lung task's).
    """
    tau = float(tolerance)
    if not tau >= 0:
        raise ValueError(f"tolerance must be >= 0 mm, got {tolerance!r}")

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from truth {truth.shape}")
        p_any, t_any = bool(pred.any()), bool(truth.any())
        if not p_any and not t_any:
            return float("nan")
        if not p_any or not t_any:
            return 0.0
        d_pt, d_tp = surface_distances(pred, truth, spacing or (1.0,) * pred.ndim)
        close = np.count_nonzero(d_pt <= tau) + np.count_nonzero(d_tp <= tau)
        return float(close / (len(d_pt) + len(d_tp)))

    return metric


def volume_diff():
    """|V(P) - V(T)| in ml, voxel volume = prod(spacing) mm^3 / 1000; 0 when both are empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        _, p, t = overlap(pred, truth)
        voxel_ml = float(np.prod(spacing or (1.0,))) / 1000.0
        return abs(p - t) * voxel_ml

    return metric


def lesion_recall():
    """Detected lesions / true lesions (26-connected; detected = any overlap); nan if no lesion."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        overlap(pred, truth)  # checks the shapes
        labels, count = components(truth)
        if count == 0:
            return float("nan")
        hit = np.unique(labels[np.asarray(pred, dtype=bool) & (labels > 0)])
        return len(hit) / count

    return metric


def fp_lesions():
    """Predicted lesions (26-connected) touching no true tumour voxel; 0 when P is empty."""

    def metric(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = ()) -> float:
        overlap(pred, truth)  # checks the shapes
        labels, count = components(pred)
        if count == 0:
            return 0.0
        touching = np.unique(labels[np.asarray(truth, dtype=bool) & (labels > 0)])
        return float(count - len(touching))

    return metric


@hookimpl
def lungseg_add_metrics(registry) -> None:
    registry.add("dice", dice)
    registry.add("iou", iou)
    registry.add("precision", precision)
    registry.add("recall", recall)
    registry.add("hd95", hd95)
    registry.add("nsd", nsd)
    registry.add("volume-diff", volume_diff)
    registry.add("lesion-recall", lesion_recall)
    registry.add("fp-lesions", fp_lesions)
