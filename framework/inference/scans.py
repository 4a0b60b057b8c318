"""The scans ``lungseg predict`` reads: NIfTI files, folders of them, DICOM series folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lungseg.data.dicom import series_ids
from lungseg.data.nnunet import CHANNEL_SUFFIX

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ScanInput:
    """One scan to predict: a NIfTI file, or a folder with one DICOM series."""

    path: Path
    dicom: bool = False

    @property
    def stem(self) -> str:
        """The output name without extension (``lung_006`` for ``lung_006.nii.gz``).

        nnU-Net's channel suffix is dropped as nnU-Net does (``lung_006_0000.nii.gz`` gives
        ``lung_006``), so masks are named after the case, like the labels in ``labelsTr``.
        """
        name = self.path.name
        for suffix in NIFTI_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                return name[: -len(CHANNEL_SUFFIX)] if name.endswith(CHANNEL_SUFFIX) else name
        return name

    @property
    def suffix(self) -> str:
        """The NIfTI extension of the input (``.nii.gz`` or ``.nii``); ``.nii.gz`` for DICOM."""
        return next((s for s in NIFTI_SUFFIXES if self.path.name.endswith(s)), ".nii.gz")


def expand_inputs(inputs: list[str | os.PathLike]) -> tuple[list[ScanInput], dict[str, str]]:
    """Files as given; folders expanded to their NIfTI files (sorted) or their DICOM series.

    Returns:
        The scans, and the inputs that cannot be predicted (path -> one-line reason): a
        missing path, a folder with neither NIfTI files nor a DICOM series, a folder with
        several DICOM series.
    """
    scans: list[ScanInput] = []
    failed: dict[str, str] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
            )
            if found:
                scans.extend(ScanInput(p) for p in found)
                continue
            ids = series_ids(path)
            if len(ids) == 1:
                scans.append(ScanInput(path, dicom=True))
            elif ids:
                failed[str(path)] = (
                    f"{path}: holds {len(ids)} DICOM series; put each series in its own folder"
                )
            else:
                failed[str(path)] = (
                    f"{path}: no .nii/.nii.gz files and no DICOM series in this folder"
                )
        elif path.exists():
            scans.append(ScanInput(path))
        else:
            failed[str(path)] = f"{path}: no such file or folder"
    return scans, failed


def dicom_only(scans: list[ScanInput], failed: dict[str, str]) -> list[ScanInput]:
    """The DICOM series among ``scans``; each NIfTI input goes to ``failed`` with the reason."""
    for scan in scans:
        if not scan.dicom:
            failed[str(scan.path)] = (
                f"{scan.path}: --format dicom-seg needs a DICOM series folder as input (a DICOM "
                "SEG references the source slices); predict NIfTI files with --format nifti"
            )
    return [scan for scan in scans if scan.dicom]
