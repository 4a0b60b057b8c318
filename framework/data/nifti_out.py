"""Writing NIfTI volumes: atomically, and deflated by ISA-L for ``.nii.gz``."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

try:  # ISA-L deflates 10-20 times as fast as zlib
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - isal is a dependency, but it is only an accelerator
    _igzip = None

#: ISA-L deflate level for ``.nii.gz`` outputs (0-3): level 2 is as fast as 1 and 0 on masks
#: and probabilities and packs them smaller than zlib's level 1 (nibabel's default).
GZIP_LEVEL = 2


def write_nifti(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    affine: np.ndarray | None = None,
    reference: str | os.PathLike | None = None,
) -> Path:
    """Write ``array`` as NIfTI-1, atomically: never half a file under the final name.

    The file is written as ``.partial-<name>`` beside ``path`` (same folder, so same file
    system) and renamed over ``path``; the parent folder is created when missing. The name
    chooses the format: ``.nii.gz`` is one standard gzip stream (deflated by ISA-L at
    :data:`GZIP_LEVEL`, read by nibabel, ``gzip`` and any NIfTI reader), ``.nii`` is not
    compressed (the fastest to write and to read back, about 4 times the size on disk).

    Args:
        path: the ``.nii.gz`` / ``.nii`` to write.
        array: the voxels, ``(X, Y, Z)``, stored in their own dtype (unscaled). Any memory
            layout; Fortran order (NIfTI's own) is written without a transposing copy.
        affine: the voxel-to-world (RAS+, mm) affine; default: the reference's.
        reference: a NIfTI file whose header is copied (orientation codes, units, zooms,
            descriptions), with the data type set to ``array``'s and no intensity scaling.
            Without it the header is new: qform and sform set to ``affine`` with code 1
            (scanner), units mm.

    Returns:
        ``path``.

    Raises:
        ValueError: neither ``affine`` nor ``reference`` is given.
    """
    array = np.asarray(array)
    if reference is not None:
        ref = nib.load(str(reference))
        header = ref.header.copy()
        header.set_data_dtype(array.dtype)
        header["scl_slope"], header["scl_inter"] = 1, 0
        image = nib.Nifti1Image(array, ref.affine if affine is None else affine, header)
    elif affine is not None:
        image = nib.Nifti1Image(array, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm")
    else:
        raise ValueError(f"{path}: write_nifti needs an affine or a reference file")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(".partial-" + path.name)  # keeps the extension nibabel needs
    try:
        with open(partial, "wb") as raw:
            if path.name.endswith(".gz"):
                with _gzip_writer(raw) as stream:
                    image.to_file_map(image.make_file_map({"image": stream}))
            else:
                image.to_file_map(image.make_file_map({"image": raw}))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _gzip_writer(raw):
    """A gzip stream over the open file ``raw``: ISA-L's deflate, zlib's when isal is missing.

    No file name in the gzip header (it would be the ``.partial-`` name) and time 0, so the
    same voxels give the same bytes.
    """
    if _igzip is not None:
        return _igzip.IGzipFile(
            filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw, mtime=0
        )
    import gzip  # pragma: no cover

    return gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0)


def write_mask(path: str | os.PathLike, mask: np.ndarray, reference: str | os.PathLike) -> Path:
    """Write a uint8 mask with exactly the reference scan's shape, affine and orientation."""
    return write_nifti(path, np.asarray(mask, dtype=np.uint8), reference=reference)
