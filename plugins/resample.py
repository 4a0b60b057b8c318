"""Spacing-aware slices: each axial slice resampled to a fixed in-plane spacing in millimetres.

``resize`` stretches every scan's field of view onto the same pixel grid, so a 10 mm nodule
spans 12 pixels in a scan with a 350 mm field and 20 in one with 250 mm. ``resample`` gives
every pixel the same size in millimetres (``spacing``), then pads or crops around the centre
to a fixed number of pixels (``size``), so the network sees anatomy at one scale. Optionally
(``lungs: true``) it first crops in-plane to the lungs' bounding box, over all slices, plus a
margin.

One affine map per volume takes output pixels to input pixels (scale, then shift), so
resampling and padding or cropping are a single interpolation per slice (OpenCV's
``warpAffine``: images linear, masks nearest-neighbour), the output affine is exact (its
column lengths are ``spacing``), and ``invert`` applies the inverse map onto the input grid,
with zeros where the output grid did not reach. When the input already has the requested
spacing, the map is a whole-pixel shift, so padding inverts exactly.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from lungseg import DataError, hookimpl
from lungseg.api import Volume, air_inside_body


def _pair(key: str, value: Any, whole: bool, low: float) -> tuple[float, float]:
    """``value`` (one number or ``[x, y]``) as two numbers >= ``low``, or a ``ValueError``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value, value]
    kind = int if whole else (int, float)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, kind) for v in values):
        what = "a whole number" if whole else "a number"
        raise ValueError(f"`{key}` must be {what} or a list [x, y] of them, got {value!r}")
    if not all(v >= low for v in values) or (not whole and not all(v > 0 for v in values)):
        raise ValueError(f"`{key}` must be {'>= ' + str(low) if whole else '> 0'}, got {value!r}")
    return values[0], values[1]


class Resample:
    """Resample slices to ``spacing`` mm, then centre-pad or crop them to ``size`` pixels.

    Place it where ``resize`` sits, after ``canonical`` and the slice crops (the spacing is
    read from the affine; after ``canonical`` x runs right to left, y front to back). It
    works before or after ``normalize``, since the padding follows the image's units; with
    ``lungs: true`` it must come before ``normalize`` (the lung finder reads HU).

    Args:
        spacing: output pixel size in mm along x and y, one number or ``[x, y]``. The default
            1.5 mm is about the seed's scale (a 512-pixel scan of a 350-400 mm field resized
            to 256).
        size: output slice size in pixels, one whole number (>= 8) or ``[x, y]``. The default
            256 at 1.5 mm is a 384 mm field, which holds an adult chest; a smaller field
            crops the sides of the scan around its centre (see ``lungs``).
        pad: image value where the output reaches beyond the input (or beyond the lung
            box); ``None``: the volume's minimum, i.e. air (-1000 HU) or the scanner's
            out-of-field value (such as -2048), divided along if ``normalize`` came first.
            Masks are padded with 0.
        lungs: first crop in-plane to the bounding box of the lungs in all slices, plus
            ``margin_mm``; everything outside the box becomes ``pad``.
        margin_mm: kept around the lungs' box, in millimetres.
        threshold: HU below which a voxel is air-like, for finding the lungs (see
            :func:`lungseg.api.air_inside_body`).

    Raises:
        ValueError: a parameter out of range (named).
    """

    def __init__(
        self,
        spacing: float | list[float] = 1.5,
        size: int | list[int] = 256,
        pad: float | None = None,
        lungs: bool = False,
        margin_mm: float = 10.0,
        threshold: float = -400.0,
    ) -> None:
        self.spacing = _pair("spacing", spacing, whole=False, low=0.0)
        self.size = _pair("size", size, whole=True, low=8)
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, (int, float))):
            raise ValueError(f"`pad` must be a number or null (the volume's minimum), got {pad!r}")
        if not isinstance(lungs, bool):
            raise ValueError(f"`lungs` must be true or false, got {lungs!r}")
        if isinstance(margin_mm, bool) or not isinstance(margin_mm, (int, float)) or margin_mm < 0:
            raise ValueError(f"`margin_mm` must be a number >= 0, got {margin_mm!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(f"`threshold` must be a number (HU), got {threshold!r}")
        self.pad = None if pad is None else float(pad)
        self.lungs = lungs
        self.margin_mm = float(margin_mm)
        self.threshold = float(threshold)

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        x, y, _ = volume.image.shape
        spacing = np.linalg.norm(np.asarray(volume.affine, dtype=np.float64)[:3, :2], axis=0)
        if not (np.isfinite(spacing).all() and (spacing > 0).all()):
            raise DataError(f"{volume.source}: its affine gives no in-plane spacing ({spacing})")
        box = self._lung_box(volume, spacing) if self.lungs else [0, x, 0, y]
        scale, shift = [], []
        for axis in range(2):
            a = self.spacing[axis] / float(spacing[axis])  # input pixels per output pixel
            a = 1.0 if math.isclose(a, 1.0, rel_tol=1e-6) else a  # same spacing: no blur
            lo, hi = box[2 * axis], box[2 * axis + 1]
            # where the box's first edge lands, in output pixels: centred, rounded towards 0
            # (an odd pad puts the extra pixel after, an odd crop drops it after) so that a
            # pure pad or crop is a whole-pixel shift
            centred = (self.size[axis] - (hi - lo) / a) / 2
            first = math.trunc(centred + math.copysign(1e-6, centred))
            scale.append(a)
            shift.append(lo + a * (0.5 - first) - 0.5)  # input centre = a * output + shift
        pad = float(volume.image.min()) if self.pad is None else self.pad
        image = _warp(volume.image, scale, shift, self.size, cv2.INTER_LINEAR, pad, box)
        mask = None
        if volume.mask is not None:
            mask = _warp(volume.mask, scale, shift, self.size, cv2.INTER_NEAREST, 0, box)
        step = np.eye(4)
        step[[0, 1], [0, 1]] = scale
        step[[0, 1], 3] = shift
        out = Volume(image, mask, volume.affine @ step, volume.source, owned=True)
        return out, {"in_plane": [x, y], "scale": scale, "shift": shift, "box": box}

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        scale = [1.0 / a for a in info["scale"]]
        shift = [-b / a for a, b in zip(info["scale"], info["shift"], strict=True)]
        interp = cv2.INTER_NEAREST if is_label else cv2.INTER_LINEAR
        out = _warp(array, scale, shift, tuple(info["in_plane"]), interp, 0, None, fortran=True)
        x0, x1, y0, y1 = info["box"]  # the step kept nothing outside the box: neither does this
        out[:x0], out[x1:], out[:, :y0], out[:, y1:] = 0, 0, 0, 0
        return out

    def _lung_box(self, volume: Volume, spacing: np.ndarray) -> list[int]:
        """``[x0, x1, y0, y1]``: the lungs' in-plane bounding box over all slices, plus margin."""
        from scipy import ndimage

        image = volume.image
        step = max(1, round(min(image.shape[:2]) / 128))  # the search runs on a thinned grid
        inside = air_inside_body(image[::step, ::step, :], self.threshold)
        labels, count = ndimage.label(inside)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        if count == 0:
            raise DataError(
                f"{volume.source}: resample found no lung (no air below {self.threshold:g} HU "
                "inside the body); is it a chest CT in Hounsfield units, and does resample "
                "with `lungs: true` come before normalize?"
            )
        keep = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.2 * sizes.max()))  # both lungs
        box = []
        for axis in range(2):
            hits = np.flatnonzero(keep.any(axis=tuple(a for a in range(3) if a != axis)))
            margin = math.ceil(self.margin_mm / float(spacing[axis]))
            box += [
                max(0, int(hits[0]) * step - margin),
                min(image.shape[axis], (int(hits[-1]) + 1) * step + margin),
            ]
        return box


def _warp(
    array: np.ndarray,
    scale: list[float],
    shift: list[float],
    shape: tuple[int, int],
    interp: int,
    border: float,
    box: list[int] | None,
    *,
    fortran: bool = False,
) -> np.ndarray:
    """Every ``out[i, j, k] = array[scale[0] i + shift[0], scale[1] j + shift[1], k]``.

    Pixels mapped outside ``array`` (or outside ``box = [x0, x1, y0, y1]``) get ``border``.

    Args:
        fortran: return NIfTI's layout (Fortran order, so the writer copies no voxel) rather
            than the store's. Each slice is warped as without it (OpenCV's fixed-point
            positions differ between a slice and its transpose) and transposed by OpenCV.

    Returns:
        An ``(*shape, Z)`` view of a C-contiguous ``(Z, *shape)`` buffer (the store's layout),
        or with ``fortran`` a Fortran-ordered array.
    """
    if array.dtype == np.bool_:
        out = _warp(array.view(np.uint8), scale, shift, shape, interp, border, box, fortran=fortran)
        return out.astype(bool)
    if box is not None:
        array = array[box[0] : box[1], box[2] : box[3]]
        shift = [shift[0] - box[0], shift[1] - box[2]]
    (ax, ay), (bx, by) = scale, shift
    z = array.shape[2]
    out = np.empty((z, shape[1], shape[0]) if fortran else (z, *shape), dtype=array.dtype)
    for k in range(z):
        src = array[:, :, k]
        if src.T.flags.c_contiguous and not src.flags.c_contiguous:  # a Fortran-ordered slice:
            matrix = np.array([[ax, 0, bx], [0, ay, by]])  # warp its transpose, rows along y
            warped = _cv_warp(src.T, matrix, (shape[0], shape[1]), interp, border)
            transposed = True
        else:
            matrix = np.array([[ay, 0, by], [0, ax, bx]])  # OpenCV's x is the column (our y)
            src = np.ascontiguousarray(src)
            warped = _cv_warp(src, matrix, (shape[1], shape[0]), interp, border)
            transposed = False
        if transposed == fortran:
            out[k] = warped
        else:
            cv2.transpose(warped, dst=out[k])
    return out.transpose(2, 1, 0) if fortran else out.transpose(1, 2, 0)


def _cv_warp(src: np.ndarray, matrix: np.ndarray, dsize, interp: int, border: float) -> np.ndarray:
    """``cv2.warpAffine`` with ``matrix`` mapping output to input pixel centres."""
    flags = interp | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(
        src, matrix, dsize, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )


@hookimpl
def lungseg_add_preprocessors(registry) -> None:
    registry.add("resample", Resample)


__all__ = ["Resample"]
