"""``lungseg predict --format dicom-seg``: a predicted mask as a DICOM Segmentation object.

The Segmentation references the CT series it was predicted from, so PACS viewers and
radiotherapy planning systems show it on those very slices. It holds one binary segment,
"Lung tumour" (SNOMED CT *Neoplasm*, category *Morphologically Abnormal Structure*, in the
*Lung*), made by the algorithm ``lungseg`` at this version, and one frame per source slice
holding tumour (DICOM SEG needs at least one frame, so an empty prediction keeps a blank
frame for every slice).

The mask comes in the ``(X, Y, Z)`` array geometry that :func:`lungseg.data.dicom.read_dicom_series`
gives (RAS affine). Each source instance's pixels are mapped back to that grid from its own
``ImagePositionPatient``, ``ImageOrientationPatient`` and ``PixelSpacing``, never from the
order of the files. highdicom (the ``lungseg[dicom]`` extra) is imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.errors import DataError, RecipeError
from lungseg.data.dicom import series_files

SEGMENT_LABEL = "Lung tumour"
"""The label of the one segment a lungseg Segmentation holds."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_TOLERANCE = 0.05  # voxels: how far a source pixel may lie from the mask's grid
# Type 2 attributes highdicom copies from the source; the SEG may leave them empty.
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def require_highdicom() -> Any:
    """Import highdicom, or fail with one line naming the extra to install.

    Raises:
        RecipeError: highdicom is not installed.
    """
    try:
        import highdicom
    except ImportError:
        raise RecipeError(
            "--format dicom-seg needs highdicom: pip install 'lungseg[dicom]'"
        ) from None
    return highdicom


def read_sources(folder: str | os.PathLike) -> list[Any]:
    """The instances of the one CT series in ``folder`` (pydicom, without pixel data).

    Raises:
        DataError: no or several series, an unreadable or multi-frame instance, or one
            without the geometry a Segmentation references.
    """
    import pydicom

    sources = []
    for name in series_files(folder):
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise DataError(f"{name}: not a readable DICOM file ({exc})") from None
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(
                f"{name}: a multi-frame instance; --format dicom-seg needs one file per slice"
            )
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if key not in ds:
                raise DataError(f"{name}: has no {key}; cannot place a segmentation on it")
        if "FrameOfReferenceUID" not in ds:
            raise DataError(f"{name}: has no FrameOfReferenceUID; a DICOM SEG needs one")
        for key in _TYPE2:
            if key not in ds:
                setattr(ds, key, "")
        ds.filename = str(name)
        sources.append(ds)
    return sources


def instance_frames(mask: np.ndarray, affine: np.ndarray, sources: Sequence[Any]) -> np.ndarray:
    """The mask at each source instance's pixels: ``(len(sources), rows, columns)`` bool.

    Pixel ``(r, c)`` of an instance lies at ``IPP + c * dc * IOP[:3] + r * dr * IOP[3:]``
    (LPS, with ``PixelSpacing = (dr, dc)``); that point, in RAS, goes through the inverse of
    ``affine`` to a voxel of ``mask``, which must be a whole voxel inside it.

    Args:
        mask: the ``(X, Y, Z)`` mask in the series' array geometry.
        affine: its voxel-to-RAS affine.
        sources: the pydicom datasets of the series' single-frame instances.

    Raises:
        DataError: an instance does not lie on the mask's voxel grid (uneven slice spacing,
            gantry tilt) or falls outside it.
    """
    mask = np.asarray(mask, dtype=bool)
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    linear, shift = to_voxel[:3, :3] @ _LPS_TO_RAS, to_voxel[:3, 3]
    frames = []
    for ds in sources:
        rows, cols = int(ds.Rows), int(ds.Columns)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        origin = linear @ np.asarray(ds.ImagePositionPatient, dtype=np.float64) + shift
        steps = np.stack([linear @ (orientation[3:] * dr), linear @ (orientation[:3] * dc)])
        o, s = np.rint(origin).astype(int), np.rint(steps).astype(int)
        # each step (down a row, along a column) must be one voxel along its own mask axis
        axes = np.abs(s).argmax(axis=1)
        on_grid = (
            max(np.abs(origin - o).max(), np.abs(steps - s).max()) <= _TOLERANCE
            and (np.abs(s).sum(axis=1) == 1).all()
            and axes[0] != axes[1]
        )
        first = o.copy()  # the first pixel's voxel, then the last pixel's along each axis
        last = o.copy()
        if on_grid:
            last[axes] += s[[0, 1], axes] * (np.array([rows, cols]) - 1)
        low, high = np.minimum(first, last), np.maximum(first, last)
        if not on_grid or low.min() < 0 or (high >= mask.shape).any():
            raise DataError(
                f"{ds.filename}: this slice does not lie on the series' voxel grid (uneven "
                "slice spacing or a tilted gantry?); write this series with --format nifti"
            )
        index = tuple(
            slice(a, b + 1) if b >= a else slice(a, b - 1 if b > 0 else None, -1)
            for a, b in zip(first, last, strict=True)
        )
        plane = mask[index]  # (X, Y, Z) order, the slice's own axis of length 1
        frames.append(plane.transpose(*axes, 3 - axes.sum()).reshape(rows, cols))
    return np.stack(frames)


def write_dicom_seg(
    path: str | os.PathLike,
    mask: np.ndarray,
    affine: np.ndarray,
    series: str | os.PathLike,
    *,
    parameters: dict[str, str] | None = None,
) -> Path:
    """Write ``mask`` as a binary DICOM Segmentation of the CT series in ``series``.

    The file is written as ``.partial-<name>`` beside ``path`` and renamed over it, so a
    failure never leaves half a file under the final name.

    Args:
        path: the ``.dcm`` file to write.
        mask: the ``(X, Y, Z)`` mask in the geometry ``read_dicom_series(series)`` gives.
        affine: that geometry's voxel-to-RAS affine.
        series: the folder holding the source series.
        parameters: settings to record in the algorithm identification (threshold...).

    Returns:
        ``path``.

    Raises:
        RecipeError: highdicom is not installed.
        DataError: the series cannot be referenced (see :func:`read_sources`) or its
            slices do not lie on the mask's grid.
    """
    hd = require_highdicom()
    from pydicom.sr.codedict import codes

    from lungseg import __version__

    sources = read_sources(series)
    frames = instance_frames(mask, affine, sources).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="lungseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
        parameters=parameters or None,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_id="lungseg lung tumour",
        tracking_uid=hd.UID(),
        anatomic_regions=[codes.SCT.Lung],
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=9001,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="lungseg",
            manufacturer_model_name="lungseg",
            software_versions=__version__,
            device_serial_number="0",
            content_label="LUNGSEG",
            content_description="lungseg lung tumour segmentation",
            series_description="lungseg lung tumour",
            omit_empty_frames=bool(frames.any()),
        )
    except (AttributeError, ValueError) as exc:  # the source lacks what a SEG must copy
        raise DataError(f"{series}: cannot make a DICOM SEG for this series ({exc})") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(".partial-" + path.name)
    try:
        seg.save_as(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
