"""Default post-processing of predicted masks, in the scan's own geometry.

Each factory returns ``post(mask, image, spacing) -> mask``: boolean ``(X, Y, Z)`` mask,
float32 Hounsfield units ``image`` of the same shape, ``spacing`` in mm per axis. An empty
mask stays empty. None of them runs unless a recipe (``evaluate.postprocess``) or
``lungseg predict --postprocess`` asks for it.
"""

from __future__ import annotations

import math

import numpy as np

from lungseg import hookimpl
from lungseg.api import air_inside_body, components

Spacing = tuple[float, ...]


def min_size(min_ml: float = 0.1):
    """Remove predicted lesions (26-connected) smaller than ``min_ml`` millilitres."""
    if min_ml < 0:
        raise ValueError(f"`min_ml` must be >= 0, got {min_ml!r}")

    def post(mask: np.ndarray, image: np.ndarray, spacing: Spacing) -> np.ndarray:
        labels, count = components(mask)
        if count == 0:
            return np.zeros(mask.shape, dtype=bool)
        sizes = np.bincount(labels.ravel())[1:] * float(np.prod(spacing)) / 1000.0
        keep = np.flatnonzero(sizes >= min_ml) + 1
        return np.isin(labels, keep)

    return post


def largest_components(count: int = 1):
    """Keep only the ``count`` largest predicted lesions (26-connected)."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"`count` must be a whole number >= 1, got {count!r}")

    def post(mask: np.ndarray, image: np.ndarray, spacing: Spacing) -> np.ndarray:
        labels, found = components(mask)
        if found <= count:
            return labels > 0
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.argsort(sizes, kind="stable")[::-1][:count] + 1
        return np.isin(labels, keep)

    return post


def lung_mask_slice(image: np.ndarray, air_hu: float) -> np.ndarray:
    """Lungs in one axial slice ``(X, Y)``: air inside the body, holes filled.

    :func:`lungseg.api.air_inside_body` leaves lung (and gas in the bowel); filling its holes
    takes in the nodules and vessels inside.
    """
    from scipy import ndimage

    return ndimage.binary_fill_holes(air_inside_body(image, air_hu))


def inside_lungs(air_hu: float = -400.0, margin_mm: float = 5.0):
    """Remove predicted lesions farther than ``margin_mm`` (in-plane) from the lungs.

    The lungs are found per axial slice by :func:`lung_mask_slice` (air below ``air_hu``).
    """
    if margin_mm < 0:
        raise ValueError(f"`margin_mm` must be >= 0, got {margin_mm!r}")
    from scipy import ndimage

    def post(mask: np.ndarray, image: np.ndarray, spacing: Spacing) -> np.ndarray:
        labels, _ = components(mask)
        out = np.zeros(mask.shape, dtype=bool)
        lungs: dict[int, np.ndarray] = {}
        reach = [math.ceil(margin_mm / s) for s in spacing[:2]]
        di, dj = np.ogrid[-reach[0] : reach[0] + 1, -reach[1] : reach[1] + 1]
        plane = (di * spacing[0]) ** 2 + (dj * spacing[1]) ** 2 <= margin_mm**2  # a disk in mm
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            near = False
            for k in range(box[2].start, box[2].stop):
                if k not in lungs:
                    lungs[k] = ndimage.binary_dilation(
                        lung_mask_slice(image[:, :, k], air_hu), structure=plane
                    )
                if (lungs[k][box[:2]] & (labels[box[0], box[1], k] == index)).any():
                    near = True
                    break
            if near:
                out[box] |= labels[box] == index
        return out

    return post


@hookimpl
def lungseg_add_postprocessors(registry) -> None:
    registry.add("min-size", min_size)
    registry.add("largest-components", largest_components)
    registry.add("inside-lungs", inside_lungs)
