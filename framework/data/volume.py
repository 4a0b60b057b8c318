"""Reading CT volumes and labels with nibabel, and the geometry needed to write masks back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from lungseg.core.errors import DataError
from lungseg.data.nifti_out import write_mask, write_nifti  # the writers, re-exported


@dataclass(frozen=True)
class Geometry:
    """Where a scan's voxels are in the world: what prediction needs to write a mask back."""

    shape: tuple[int, int, int]
    affine: np.ndarray = field(repr=False)
    spacing: tuple[float, float, float]
    orientation: str

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: np.ndarray) -> Geometry:
        affine = np.asarray(affine, dtype=np.float64)
        spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        orientation = "".join(nib.aff2axcodes(affine))
        return cls(tuple(int(s) for s in shape[:3]), affine, spacing, orientation)

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready attributes (stored on each case group of the slice store)."""
        return {
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "spacing": list(self.spacing),
            "orientation": self.orientation,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Geometry:
        return cls.from_affine(tuple(attrs["shape"]), np.asarray(attrs["affine"]))


@dataclass
class Volume:
    """A volume travelling through the preprocessing chain.

    Attributes:
        image: float32 array ``(X, Y, Z)``, slice axis last, in any memory layout (views of
            the reader's Fortran-ordered array are common).
        mask: uint8 array of the same shape in {0, 1}, or ``None`` for unlabelled scans.
        affine: the voxel-to-world affine of the current array.
        source: the file it came from, for messages.
        owned: ``True`` when no one outside the chain holds ``image`` (or the array it is a
            view of), so a step may overwrite it in place instead of allocating a copy.
            Leave it ``False`` for arrays you keep using after the chain has run.
    """

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    source: str = "<array>"
    owned: bool = False


try:  # ISA-L inflates gzip about twice as fast as zlib; the reader falls back to zlib
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency, but it is only an accelerator
    _isal_zlib = None

_SINGLE_FILE = (nib.Nifti1Image, nib.Nifti2Image)


def _load(path: Path) -> nib.spatialimages.SpatialImage:
    """Open ``path`` and check its header (the voxel data is read later, by :func:`_read`)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({exc})") from exc
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise DataError(
            f"{path}: expected a 3D volume, got {len(shape)}D with shape {tuple(shape)}; "
            "pass one 3D CT per file"
        )
    return img


def _stored(img: nib.spatialimages.SpatialImage, path: Path) -> np.ndarray:
    """The voxels as stored (type, byte order; unscaled), Fortran order, maybe read-only.

    A ``.nii.gz`` is inflated by ISA-L in one call into a buffer of exactly the file's size
    and viewed in place (no copy); anything else goes through nibabel's proxy.
    """
    proxy = img.dataobj
    if _isal_zlib is not None and path.name.endswith(".gz") and isinstance(img, _SINGLE_FILE):
        shape = tuple(int(n) for n in proxy.shape)
        size = int(proxy.offset) + int(np.prod(shape)) * proxy.dtype.itemsize
        # one spare byte: with an exactly full buffer ISA-L doubles it to look for the end
        raw = _isal_zlib.decompress(path.read_bytes(), wbits=31, bufsize=size + 1)
        if len(raw) >= size:  # else a multi-member gzip: nibabel's reader handles those
            return np.ndarray(shape, proxy.dtype, buffer=raw, offset=int(proxy.offset), order="F")
    return np.asarray(proxy.get_unscaled())


def _read(img: nib.spatialimages.SpatialImage, path: Path, as_float32: bool) -> np.ndarray:
    """The voxel data, scaled, as float32 or (labels) the stored type; ``(X, Y, Z)``.

    Scaling (``scl_slope``, ``scl_inter``) is applied in float32: nibabel's own
    ``get_fdata(dtype=float32)`` makes a float64 temporary for scaled integers.
    """
    proxy = img.dataobj
    try:
        if not all(hasattr(proxy, a) for a in ("slope", "inter", "get_unscaled", "offset")):
            data = img.get_fdata(dtype=np.float32) if as_float32 else np.asarray(proxy)
        else:
            stored = _stored(img, path)
            slope, inter = float(proxy.slope), float(proxy.inter)
            if as_float32 or slope != 1 or inter != 0:
                data = stored.astype(np.float32)  # the only full-size allocation
                if slope != 1:
                    data *= np.float32(slope)
                if inter != 0:
                    data += np.float32(inter)
            else:  # a writable, native-order copy that frees the inflated buffer
                data = stored.astype(stored.dtype.newbyteorder("="))
    except Exception as exc:  # truncated gzip, short file, corrupt stream
        raise DataError(
            f"{path}: could not read the voxel data ({exc}); is it truncated or corrupt?"
        ) from exc
    if data.ndim == 4:  # (X, Y, Z, 1), accepted by _load
        data = data[..., 0]
    return data


def _all_finite(data: np.ndarray, slab: int = 32) -> bool:
    """``np.isfinite(data).all()`` without a whole-volume boolean temporary."""
    return all(np.isfinite(data[:, :, k : k + slab]).all() for k in range(0, data.shape[2], slab))


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a CT image as float32 Hounsfield units (never float64).

    Peak memory is the stored voxels plus the float32 array (6 bytes a voxel for int16 CT).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The ``(X, Y, Z)`` float32 array (Fortran order, as stored) and its :class:`Geometry`.

    Raises:
        DataError: missing, unreadable or truncated file; not 3D; NaN or infinite values.
    """
    path = Path(path)
    img = _load(path)
    data = _read(img, path, as_float32=True)
    # integers scaled by a finite slope are finite: only float data needs the scan
    if np.dtype(img.get_data_dtype()).kind in "fc" and not _all_finite(data):
        raise DataError(f"{path}: contains NaN or infinite values; fix or drop this scan")
    return data, Geometry.from_affine(data.shape, img.affine)


def read_label(path: str | os.PathLike, geometry: Geometry, image_path: str = "") -> np.ndarray:
    """Read a binary label volume that must match its image.

    Raises:
        DataError: unreadable, shape or affine different from the image's, values not in {0, 1}.
    """
    path = Path(path)
    img = _load(path)
    of = f" of {image_path}" if image_path else ""
    if tuple(img.shape[:3]) != geometry.shape:
        raise DataError(
            f"{path}: label shape {tuple(img.shape[:3])} differs from image shape "
            f"{geometry.shape}{of}; the pair does not belong together"
        )
    if not np.allclose(img.affine, geometry.affine, atol=1e-3):
        raise DataError(
            f"{path}: label affine differs from the image's{of}; "
            "resample the label onto the image grid"
        )
    data = _read(img, path, as_float32=False)
    if not _binary(data):
        values = np.unique(data)
        raise DataError(
            f"{path}: label values must be 0 and 1, found {values[:10].tolist()}; "
            "binarise the label (tumour = 1)"
        )
    return data.astype(np.uint8, copy=False)


def _binary(data: np.ndarray) -> bool:
    """All values in {0, 1}: two reductions for integers, no sort (np.unique) of the volume."""
    if data.size == 0:
        return True
    if data.dtype.kind in "biu":
        return bool(data.min() >= 0 and data.max() <= 1)
    return bool(np.all((data == 0) | (data == 1)))


__all__ = [
    "Geometry",
    "Volume",
    "read_image",
    "read_label",
    "write_mask",
    "write_nifti",
]
