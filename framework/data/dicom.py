"""Reading one DICOM CT series from a folder (SimpleITK/GDCM), as lungseg's RAS arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lungseg.core.errors import DataError
from lungseg.data.volume import Geometry

#: LPS (DICOM, ITK) to RAS (NIfTI, nibabel) world coordinates.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def series_ids(folder: str | os.PathLike) -> list[str]:
    """The DICOM series instance UIDs of the files directly inside ``folder``."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the single DICOM series in ``folder``, sorted by slice position (GDCM).

    Raises:
        DataError: no series, or more than one series.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    ids = series_ids(folder)
    if not ids:
        raise DataError(f"{folder}: no DICOM series in this folder")
    if len(ids) > 1:
        raise DataError(
            f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); "
            "put each series in its own folder"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def read_dicom_series(folder: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read the single CT series in ``folder`` as float32 Hounsfield units.

    GDCM sorts the slices by position and applies RescaleSlope/RescaleIntercept. ITK's
    LPS direction, spacing and origin become a NIfTI-style RAS affine, so the masks
    written for it line up with the scan in any NIfTI viewer.

    Args:
        folder: a folder holding the ``.dcm`` files of exactly one series.

    Returns:
        The ``(X, Y, Z)`` float32 array (column, row, slice) and its :class:`Geometry`.

    Raises:
        DataError: no series, more than one series, one slice only, or unreadable files.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    files = series_files(folder)
    try:
        image = sitk.ReadImage(list(files), sitk.sitkFloat32)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{folder}: could not read the DICOM series ({first})") from None
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise DataError(
            f"{folder}: the DICOM series has size {image.GetSize()}; "
            "expected a 3D CT with at least 2 slices"
        )
    array = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))
    if not np.isfinite(array).all():
        raise DataError(f"{folder}: contains NaN or infinite values; fix or drop this series")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return array.astype(np.float32, copy=False), Geometry.from_affine(array.shape, affine)
