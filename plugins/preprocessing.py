"""Default preprocessing steps: the seed's chain, each step invertible for predictions.

Every step keeps arrays as ``(X, Y, Z)`` with the axial slice axis last, in whatever memory
layout is cheapest: nibabel hands volumes over in Fortran order (each axial slice contiguous),
reorientation and crops return views, and :class:`Resize` writes into a slice-first buffer, so
the store receives C-contiguous ``(Z, X, Y)`` slices without a transposing copy of the volume.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from nibabel import orientations as ornt

from lungseg import DataError, hookimpl
from lungseg.api import Volume, crop_slices, uncrop_slices

_RAS = ornt.axcodes2ornt("RAS")


class Canonical:
    """Reorient to the closest canonical (RAS+) orientation, so slice 0 is the inferior end.

    The result is a view (flips and axis swaps only): no voxel is copied.
    """

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        current = ornt.io_orientation(volume.affine)
        info = {"ornt": current.tolist(), "shape": list(volume.image.shape)}
        if np.array_equal(current, _RAS):
            return volume, info
        transform = ornt.ornt_transform(current, _RAS)
        image = ornt.apply_orientation(volume.image, transform)
        mask = None
        if volume.mask is not None:
            mask = ornt.apply_orientation(volume.mask, transform)
        affine = volume.affine @ ornt.inv_ornt_aff(transform, volume.image.shape)
        return Volume(image, mask, affine, volume.source, volume.owned), info

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        original = np.asarray(info["ornt"])
        if np.array_equal(original, _RAS):
            return array
        # a view, as forward: the writer and the threshold read any layout, so a copy here
        # would only cost a pass over the scan-sized array
        return ornt.apply_orientation(array, ornt.ornt_transform(_RAS, original))


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
        return crop_slices(volume, self.count, depth)  # info: start, stop, depth

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        return uncrop_slices(array, info)


class Normalize:
    """Divide Hounsfield units by ``divisor`` (the seed: 3071, the top of the CT range).

    ``clip`` (optional ``[low, high]`` in HU) is applied first; the seed does not clip.
    The result is float32; it overwrites the input when the chain owns it
    (:attr:`Volume.owned`), so a large scan is not held twice.
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
        in_place = volume.owned and image.dtype == np.float32 and image.flags.writeable
        out = image if in_place else np.empty_like(image, dtype=np.float32)
        if self.clip is not None:
            np.clip(image, self.clip[0], self.clip[1], out=out, casting="unsafe")
            image = out
        np.divide(image, np.float32(self.divisor), out=out, casting="unsafe")
        return Volume(out, volume.mask, volume.affine, volume.source, owned=True), {}

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
        resized = Volume(image, mask, volume.affine @ scale, volume.source, owned=True)
        return resized, {"in_plane": [x, y]}

    def invert(
        self, array: np.ndarray, info: dict[str, Any], *, is_label: bool, device: Any = None
    ) -> np.ndarray:
        """Resize back to the input's in-plane size, in NIfTI's (Fortran) order.

        On a GPU ``device`` (where the network ran) all slices are resized in one batched
        call (:func:`resize_batched`); on the CPU OpenCV resizes slice by slice, which is
        faster there than a batched ``torch`` call.
        """
        shape = tuple(info["in_plane"])
        if device is not None and str(device) != "cpu":
            return resize_batched(array, shape, is_label=is_label, device=device)
        interp = cv2.INTER_NEAREST if is_label else cv2.INTER_LINEAR
        return _resize(array, shape, interp, fortran=True)


def _resize(
    array: np.ndarray, shape: tuple[int, int], interp: int, *, fortran: bool = False
) -> np.ndarray:
    """Resize every ``array[:, :, k]`` to ``shape`` (rows, columns).

    Args:
        fortran: return NIfTI's layout (Fortran order: the writer copies no voxel) rather
            than the store's.

    Returns:
        An ``(*shape, Z)`` view of a C-contiguous ``(Z, *shape)`` buffer, so each output slice
        is contiguous (the store's layout); with ``fortran``, a Fortran-ordered array.
    """
    z = array.shape[2]
    out = np.empty((z, shape[1], shape[0]) if fortran else (z, *shape), dtype=array.dtype)
    dsize = out.shape[:0:-1]  # OpenCV's (width, height) of each out[k]
    for k in range(z):
        src, transposed = _opencv_view(array[:, :, k])
        if transposed == fortran:  # src's rows run along out[k]'s rows: resize into place
            cv2.resize(src, dsize, dst=out[k], interpolation=interp)
        elif fortran:  # transpose the small input slice, not the large output one
            cv2.resize(np.ascontiguousarray(src.T), dsize, dst=out[k], interpolation=interp)
        else:  # resize the transpose, whose rows are contiguous
            out[k] = cv2.resize(src, shape, interpolation=interp).T
    return out.transpose(2, 1, 0) if fortran else out.transpose(1, 2, 0)


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output pixel along one axis, as OpenCV's ``INTER_NEAREST``.

    ``floor(i / (size_out / size_in))`` in double precision, clipped to the input: the same
    arithmetic as ``cv2.resize``, so a gather with these indices equals it exactly.
    """
    step = 1.0 / (size_out / size_in)
    return np.minimum(np.floor(np.arange(size_out) * step), size_in - 1).astype(np.int64)


def resize_batched(
    array: np.ndarray,
    shape: tuple[int, int],
    *,
    is_label: bool,
    device: Any = "cpu",
    chunk: int = 128,
) -> np.ndarray:
    """Resize every ``array[:, :, k]`` to ``shape`` with ``torch``, ``chunk`` slices a call.

    Meant for a GPU (on the CPU, :func:`_resize` is faster). Labels gather with OpenCV's
    indices (:func:`nearest_indices`), so they equal :func:`_resize` exactly; probabilities
    go through ``torch.nn.functional.interpolate`` (bilinear, half-pixel centres, edges
    repeated: OpenCV's ``INTER_LINEAR``), equal to :func:`_resize` up to float rounding of
    the sample positions: within 1.2e-7 for 256 to 512 pixels, 5e-5 for any sizes, for
    values in [0, 1].

    Returns:
        A Fortran-ordered ``(*shape, Z)`` array of ``array``'s dtype (NIfTI's layout).
    """
    import torch
    import torch.nn.functional as F

    x, y, z = array.shape
    out = np.empty((z, shape[1], shape[0]), dtype=array.dtype)  # (Z, Y, X): Fortran (X, Y, Z)

    def put(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).to(device)

    if is_label:
        rows, cols = put(nearest_indices(y, shape[1])), put(nearest_indices(x, shape[0]))
    for start in range(0, z, chunk):
        part = np.ascontiguousarray(np.moveaxis(array[:, :, start : start + chunk], 2, 0))
        src = put(part).transpose(1, 2)  # (n, Y', X'): each slice as Fortran order stores it
        if is_label:
            got = src.index_select(1, rows).index_select(2, cols)
        else:
            whole = not src.is_floating_point()  # rounded back, as OpenCV does
            grid = (src.float() if whole else src)[None]
            got = F.interpolate(grid, size=shape[::-1], mode="bilinear", align_corners=False)[0]
            got = got.round() if whole else got
        out[start : start + chunk] = got.cpu().numpy()
    return out.transpose(2, 1, 0)


def _opencv_view(src: np.ndarray) -> tuple[np.ndarray, bool]:
    """A slice as an array OpenCV reads directly, and whether it is the transpose.

    Slices of nibabel's Fortran-ordered volumes are column-major, and the canonical step's
    flips give them negative strides. Rather than a strided NumPy copy, the transpose is
    passed as is and flips are undone with ``cv2.flip`` (a vectorised copy). Transposing
    commutes with both interpolations, and the flip is applied before resizing, so results
    equal resizing the canonical slice (linear: up to float rounding).
    """
    flips = [stride < 0 for stride in src.strides]
    base = src[:: -1 if flips[0] else 1, :: -1 if flips[1] else 1]
    if base.flags.c_contiguous:
        view, transposed = base, False
    elif base.T.flags.c_contiguous:
        view, transposed, flips = base.T, True, flips[::-1]
    else:
        return np.ascontiguousarray(src), False
    if all(flips):
        view = cv2.flip(view, -1)
    elif flips[0]:
        view = cv2.flip(view, 0)  # rows
    elif flips[1]:
        view = cv2.flip(view, 1)  # columns
    return view, transposed


@hookimpl
def lungseg_add_preprocessors(registry) -> None:
    registry.add("canonical", Canonical)
    registry.add("skip-slices", SkipSlices)
    registry.add("normalize", Normalize)
    registry.add("resize", Resize)


__all__ = ["Canonical", "Normalize", "Resize", "SkipSlices"]
