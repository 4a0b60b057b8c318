"""Overlap counting, connected components and surface distances for the metric plugins.

Plugins reach these through :mod:`lungseg.api`. SciPy is imported on first use, so importing
this module (and registering a plugin that uses it) stays cheap.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Metric(Protocol):
    """A metric plugin: ``metric(pred, truth, spacing) -> float`` on boolean 3D arrays.

    The value is a float (Python or NumPy), ``nan`` where the metric is undefined (Dice of
    two empty masks; evaluation leaves ``nan`` out of means), never ``None``.
    """

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


#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one lesion.
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (26-connected) of a boolean 3D mask: ``(labels, count)``."""
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=FULL_CONNECTIVITY)
    return labels, int(count)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one voxel of margin."""
    union = a | b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(hits[0] - 1, 0), hits[-1] + 2))
    return np.pad(a[tuple(box)], 1), np.pad(b[tuple(box)], 1)


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of ``a`` to the surface of ``b``, and back.

    The surface of a mask is its voxels with a 6-connected neighbour outside it. Distances
    are Euclidean between voxel centres, scaled by ``spacing`` (mm per axis). The arrays are
    cut to the bounding box of their union first, which leaves every distance unchanged.

    Args:
        a: boolean ``(X, Y, Z)`` mask, not empty.
        b: boolean mask of the same shape, not empty.
        spacing: voxel size in mm per axis.

    Returns:
        ``(d_ab, d_ba)``: 1D float arrays, one distance per surface voxel of ``a`` and of ``b``.
    """
    from scipy import ndimage

    a, b = _crop_to_union(np.asarray(a, dtype=bool), np.asarray(b, dtype=bool))
    surf_a = a & ~ndimage.binary_erosion(a)
    surf_b = b & ~ndimage.binary_erosion(b)
    sampling = tuple(float(s) for s in spacing[: a.ndim])
    to_b = ndimage.distance_transform_edt(~surf_b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surf_a, sampling=sampling)
    return to_b[surf_a], to_a[surf_b]
