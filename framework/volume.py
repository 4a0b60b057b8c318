"""Reading CT volumes and labels with nibabel, and the geometry needed to write masks back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from lungseg.errors import DataError


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
        image: float32 array ``(X, Y, Z)``, slice axis last.
        mask: uint8 array of the same shape in {0, 1}, or ``None`` for unlabelled scans.
        affine: the voxel-to-world affine of the current array.
        source: the file it came from, for messages.
    """

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    source: str = "<array>"


def _load(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({exc})") from exc
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
        shape = img.shape
    if len(shape) != 3:
        raise DataError(
            f"{path}: expected a 3D volume, got {len(shape)}D with shape {tuple(shape)}; "
            "pass one 3D CT per file"
        )
    return img


def _read(img: nib.Nifti1Image, path: Path, dtype: type) -> np.ndarray:
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32) if dtype is np.float32 else img.dataobj)
    except Exception as exc:  # truncated gzip, short file
        raise DataError(f"{path}: could not read the voxel data ({exc}); is it truncated?") from exc
    return data


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a CT image as float32 Hounsfield units (never float64).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The ``(X, Y, Z)`` float32 array and its :class:`Geometry`.

    Raises:
        DataError: missing, unreadable or truncated file; not 3D; NaN or infinite values.
    """
    path = Path(path)
    img = _load(path)
    data = _read(img, path, np.float32)
    if not np.isfinite(data).all():
        raise DataError(f"{path}: contains NaN or infinite values; fix or drop this scan")
    return data, Geometry.from_affine(data.shape, img.affine)


def read_label(path: str | os.PathLike, geometry: Geometry, image_path: str = "") -> np.ndarray:
    """Read a binary label volume that must match its image.

    Raises:
        DataError: unreadable, shape or affine different from the image's, values not in {0, 1}.
    """
    path = Path(path)
    img = _load(path)
    data = np.asarray(_read(img, path, np.uint8))
    if data.shape != geometry.shape:
        raise DataError(
            f"{path}: label shape {data.shape} differs from image shape {geometry.shape}"
            f"{' of ' + image_path if image_path else ''}; the pair does not belong together"
        )
    if not np.allclose(img.affine, geometry.affine, atol=1e-3):
        of = f" ({image_path})" if image_path else ""
        raise DataError(
            f"{path}: label affine differs from the image's{of}; "
            "resample the label onto the image grid"
        )
    values = np.unique(data)
    if not np.isin(values, (0, 1)).all():
        raise DataError(
            f"{path}: label values must be 0 and 1, found {values[:10].tolist()}; "
            "binarise the label (tumour = 1)"
        )
    return data.astype(np.uint8, copy=False)


def write_mask(path: str | os.PathLike, mask: np.ndarray, reference: str | os.PathLike) -> Path:
    """Write a uint8 mask with exactly the reference scan's shape, affine and orientation."""
    ref = nib.load(str(reference))
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    header["scl_slope"] = 1
    header["scl_inter"] = 0
    out = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), ref.affine, header)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".partial-" + path.name)  # keeps the extension nibabel needs
    nib.save(out, str(tmp))
    os.replace(tmp, path)  # never leaves a half-written mask under the final name
    return path
