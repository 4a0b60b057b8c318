"""Default preprocessing steps: the seed's chain, each step invertible for predictions.

Every step keeps arrays as ``(X, Y, Z)`` with the axial slice axis last.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from nibabel import orientations as ornt

from lungseg import DataError, hookimpl
from lungseg.volume import Volume

_RAS = ornt.axcodes2ornt("RAS")


class Canonical:
    """Reorient to the closest canonical (RAS+) orientation, so slice 0 is the inferior end."""

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        current = ornt.io_orientation(volume.affine)
        info = {"ornt": current.tolist(), "shape": list(volume.image.shape)}
        if np.array_equal(current, _RAS):
            return volume, info
        transform = ornt.ornt_transform(current, _RAS)
        image = np.ascontiguousarray(ornt.apply_orientation(volume.image, transform))
        mask = None
        if volume.mask is not None:
            mask = np.ascontiguousarray(ornt.apply_orientation(volume.mask, transform))
        affine = volume.affine @ ornt.inv_ornt_aff(transform, volume.image.shape)
        return Volume(image, mask, affine, volume.source), info

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        original = np.asarray(info["ornt"])
        if np.array_equal(original, _RAS):
            return array
        return np.ascontiguousarray(
            ornt.apply_orientation(array, ornt.ornt_transform(_RAS, original))
        )


class SkipSlices:
    """Drop the first ``count`` axial slices (the lower abdomen), as the seed does."""

    def __init__(self, count: int = 30) -> None:
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"`count` must be a whole number >= 0, got {count!r}")
        self.count = count

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        depth = volume.image.shape[2]
        if depth <= self.count:
            raise DataError(
                f"{volume.source}: has {depth} slices but skip-slices drops the first "
                f"{self.count}; lower `count` or use the lung-extent crop"
            )
        return _crop(volume, self.count, depth), {
            "start": self.count,
            "stop": depth,
            "depth": depth,
        }

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        return _uncrop(array, info)


def _crop(volume: Volume, start: int, stop: int) -> Volume:
    shift = np.eye(4)
    shift[2, 3] = start
    mask = None if volume.mask is None else volume.mask[:, :, start:stop]
    return Volume(volume.image[:, :, start:stop], mask, volume.affine @ shift, volume.source)


def _uncrop(array: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    out = np.zeros((*array.shape[:2], info["depth"]), dtype=array.dtype)
    out[:, :, info["start"] : info["stop"]] = array
    return out


class Normalize:
    """Divide Hounsfield units by ``divisor`` (the seed: 3071, the top of the CT range).

    ``clip`` (optional ``[low, high]`` in HU) is applied first; the seed does not clip.
    """

    def __init__(self, divisor: float = 3071.0, clip: list[float] | None = None) -> None:
        if not divisor:
            raise ValueError(f"`divisor` must be non-zero, got {divisor!r}")
        if clip is not None and (len(clip) != 2 or clip[0] >= clip[1]):
            raise ValueError(f"`clip` must be [low, high] with low < high, got {clip!r}")
        self.divisor = float(divisor)
        self.clip = clip

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        image = volume.image
        if self.clip is not None:
            image = np.clip(image, self.clip[0], self.clip[1])
        image = (image / np.float32(self.divisor)).astype(np.float32, copy=False)
        return Volume(image, volume.mask, volume.affine, volume.source), {}

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        return array  # intensities only: the grid is unchanged


class Resize:
    """Resize each axial slice to ``size`` x ``size``: images linear, masks nearest-neighbour."""

    def __init__(self, size: int = 256) -> None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"`size` must be a whole number >= 8, got {size!r}")
        self.size = size

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        x, y, _ = volume.image.shape
        image = _resize(volume.image, (self.size, self.size), cv2.INTER_LINEAR)
        mask = None
        if volume.mask is not None:
            mask = _resize(volume.mask, (self.size, self.size), cv2.INTER_NEAREST)
        scale = np.diag([x / self.size, y / self.size, 1.0, 1.0])
        return Volume(image, mask, volume.affine @ scale, volume.source), {"in_plane": [x, y]}

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        interp = cv2.INTER_NEAREST if is_label else cv2.INTER_LINEAR
        return _resize(array, tuple(info["in_plane"]), interp)


def _resize(array: np.ndarray, shape: tuple[int, int], interp: int) -> np.ndarray:
    """Resize every ``array[:, :, k]`` to ``shape`` (rows, columns)."""
    out = np.empty((*shape, array.shape[2]), dtype=array.dtype)
    dsize = (shape[1], shape[0])  # OpenCV takes (width, height)
    for k in range(array.shape[2]):
        out[:, :, k] = cv2.resize(array[:, :, k], dsize, interpolation=interp)
    return out


@hookimpl
def lungseg_add_preprocessors(registry) -> None:
    registry.add("canonical", Canonical)
    registry.add("skip-slices", SkipSlices)
    registry.add("normalize", Normalize)
    registry.add("resize", Resize)


__all__ = ["Canonical", "Normalize", "Resize", "SkipSlices"]
