"""The lung-extent crop: keep the axial slices that hold lung, found in each scan.

``skip-slices`` drops a fixed number of inferior slices, which suits scans that all start at
the same level; ``lung-crop`` looks at each scan and keeps the slices from the lung bases to
the apices (plus a margin in millimetres), so scans of any extent (abdomen included or not,
neck included or not) reach the model covering the same anatomy. docs/store.md compares them.

Lung is found as air-density tissue inside the body (:func:`lung_air`): voxels below
``threshold`` HU not connected, within their slice, to the image border
(:func:`lungseg.api.air_inside_body`: that air is outside the patient), and those that are,
where the field of view cuts through the chest: air that touches the border but is not gas
and lies within the body's outline. Of their 3D components, those that are mostly gas
(median below ``gas_below`` HU: bowel gas, the stomach bubble, the trachea, all near -1000)
are dropped; lung parenchyma is -700 to -900. The largest remaining component and every one at
least ``min_component`` of its size (the other lung) are the lungs. The search runs on a grid
thinned to about 128 voxels across, so it costs a few hundredths of the time of reading the
scan.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lungseg import DataError, hookimpl
from lungseg.api import Volume, air_inside_body, crop_slices, uncrop_slices


class LungCrop:
    """Crop to the axial extent of the lungs (HU input: place it before ``normalize``).

    Args:
        threshold: Hounsfield units below which a voxel is air-like (lung is about -850).
        margin_mm: kept beyond the lungs at each end, in millimetres along the slice axis.
        min_component: components at least this fraction of the largest one count as lung.
        gas_below: components with more than half their voxels below this HU are gas, not
            lung (-950 is also the usual emphysema cut-off: lower it for severe emphysema).
        min_slices: fewest slices the crop may keep; a scan whose lungs span fewer is
            refused (a scout or a partial scan), naming the file.

    Raises:
        ValueError: a parameter out of range (named).
    """

    def __init__(
        self,
        threshold: float = -400.0,
        margin_mm: float = 10.0,
        min_component: float = 0.2,
        min_slices: int = 8,
        gas_below: float = -950.0,
    ) -> None:
        if not isinstance(threshold, int | float) or not -1000 < threshold < 0:
            raise ValueError(f"`threshold` must be in HU between -1000 and 0, got {threshold!r}")
        if not isinstance(margin_mm, int | float) or margin_mm < 0:
            raise ValueError(f"`margin_mm` must be >= 0, got {margin_mm!r}")
        if not isinstance(min_component, int | float) or not 0 < min_component <= 1:
            raise ValueError(f"`min_component` must be in (0, 1], got {min_component!r}")
        if not isinstance(gas_below, int | float) or not gas_below < threshold:
            raise ValueError(f"`gas_below` must be below `threshold`, got {gas_below!r}")
        if isinstance(min_slices, bool) or not isinstance(min_slices, int) or min_slices < 1:
            raise ValueError(f"`min_slices` must be a whole number >= 1, got {min_slices!r}")
        self.threshold = float(threshold)
        self.margin_mm = float(margin_mm)
        self.min_component = float(min_component)
        self.min_slices = min_slices
        self.gas_below = float(gas_below)

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        depth = volume.image.shape[2]
        extent = lung_extent(volume.image, self.threshold, self.min_component, self.gas_below)
        if extent is None:
            raise DataError(
                f"{volume.source}: lung-crop found no lung (no air below {self.threshold:g} HU "
                "inside the body); is it a chest CT in Hounsfield units, and does lung-crop "
                "come before normalize?"
            )
        spacing = float(np.linalg.norm(volume.affine[:3, 2])) or 1.0
        margin = math.ceil(self.margin_mm / spacing)
        start, stop = max(0, extent[0] - margin), min(depth, extent[1] + margin)
        if stop - start < self.min_slices:
            raise DataError(
                f"{volume.source}: has {depth} slices and lung-crop keeps {stop - start}, fewer "
                f"than min_slices={self.min_slices}; is this a partial scan? Lower "
                "`min_slices` to keep it"
            )
        cropped, info = crop_slices(volume, start, stop)  # info: start, stop, depth
        return cropped, {**info, "lung": list(extent)}

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        return uncrop_slices(array, info)


def lung_extent(
    image: np.ndarray,
    threshold: float = -400.0,
    min_component: float = 0.2,
    gas_below: float = -950.0,
) -> tuple[int, int] | None:
    """The slices ``[first, last + 1)`` holding lung in an ``(X, Y, Z)`` HU volume.

    Air inside the body is :func:`lung_air`; of its 3D components, the mostly-gas ones are
    dropped and the largest and those near its size are the lungs.

    Returns:
        ``(start, stop)`` on the slice axis, or ``None`` when no lung-like region exists.
    """
    from scipy import ndimage

    step = max(1, round(min(image.shape[:2]) / 128))
    thin = image[::step, ::step, :]  # thinned in-plane only: every slice counts
    inside = lung_air(thin, threshold, gas_below)
    labels, count = ndimage.label(inside)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    gas = np.bincount(labels[inside & (thin < gas_below)], minlength=count + 1)[1:]
    sizes[2 * gas > sizes] = 0  # mostly gas: bowel, stomach, airway
    if count == 0 or not sizes.any():
        return None
    keep = np.flatnonzero(sizes >= min_component * sizes.max())
    boxes = ndimage.find_objects(labels)
    start = min(boxes[i][2].start for i in keep)
    stop = max(boxes[i][2].stop for i in keep)
    return int(start), int(stop)


def lung_air(image: np.ndarray, threshold: float = -400.0, gas_below: float = -950.0) -> np.ndarray:
    """Air-like voxels of an ``(X, Y, Z)`` HU volume that may be lung: inside the body.

    That is :func:`lungseg.api.air_inside_body` (air not connected to the image border within
    its slice) and, for a field of view that cuts through the chest, each border-touching air
    region of a slice that is not gas (at most a quarter of its voxels below ``gas_below``:
    outside air is about -1000 HU, or the scanner's padding below it) and lies
    mostly within the body's outline: between tissue of the body (its largest 3D component of
    voxels at or above ``threshold``) on both sides along a row or along a column.

    Where the view cuts through the body, pockets of outside air between the back and the
    table, or bowel gas blurred with its contents, may pass as lung too: a crop then keeps
    more slices than it needs.
    """
    from scipy import ndimage

    inside = air_inside_body(image, threshold)
    cut = (image < threshold) & ~inside
    if not cut.any():
        return inside
    plane = np.zeros((3, 3, 3), bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    labels, count = ndimage.label(cut, structure=plane)
    total = np.bincount(labels.ravel(), minlength=count + 1)
    gas = np.bincount(labels[cut & (image < gas_below)], minlength=count + 1)
    keep = 4 * gas <= total  # stricter than for enclosed air: a quarter, not half
    keep[0] = False
    if not keep.any():  # all outside air: the whole body is in view
        return inside
    tissue, _ = ndimage.label(image >= threshold)
    sizes = np.bincount(tissue.ravel())
    sizes[0] = 0
    body = tissue == sizes.argmax()
    between = np.zeros(body.shape, bool)
    for axis in (0, 1):
        ahead = np.maximum.accumulate(body, axis=axis)
        behind = np.flip(np.maximum.accumulate(np.flip(body, axis), axis=axis), axis)
        between |= ahead & behind
    keep &= 2 * np.bincount(labels[between & cut], minlength=count + 1) > total
    return inside | keep[labels]


@hookimpl
def lungseg_add_preprocessors(registry) -> None:
    registry.add("lung-crop", LungCrop)


__all__ = ["LungCrop", "lung_air", "lung_extent"]
