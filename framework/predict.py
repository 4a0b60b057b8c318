"""``lungseg predict``: new scans -> the checkpoint's chain -> model -> masks in scan geometry."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungseg.checkpoint import load_checkpoint
from lungseg.errors import DataError, LungsegError
from lungseg.inference import default_device, predict_probs
from lungseg.manager import load_registry
from lungseg.preprocessing import Chain
from lungseg.volume import Volume, read_image, write_mask

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def expand_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to the NIfTI files inside (sorted).

    Raises:
        DataError: an input does not exist, or a folder holds no NIfTI file.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
            )
            if not found:
                raise DataError(f"{path}: no .nii or .nii.gz files in this folder")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def predict(
    checkpoint: str | os.PathLike,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> PredictReport:
    """Write a uint8 {0, 1} mask per input scan, with the input's exact shape and affine.

    The preprocessing is the chain stored in the checkpoint's recipe; slices it drops
    are 0 in the mask. A failing input is reported and the others are still predicted.
    """
    module, recipe = load_checkpoint(checkpoint)
    chain = Chain.from_components(recipe.preprocess, load_registry())
    threshold = recipe.evaluate.threshold if threshold is None else threshold
    batch_size = batch_size or recipe.evaluate.batch_size
    device = device or default_device()
    report = PredictReport()
    for path in expand_inputs(inputs):
        try:
            image, geometry = read_image(path)
            volume, trace = chain.forward(Volume(image, None, geometry.affine, str(path)))
            probs = predict_probs(module.model, np.moveaxis(volume.image, 2, 0), batch_size, device)
            back = chain.invert(np.moveaxis(probs, 0, 2), trace, is_label=False)
            mask = (back >= threshold).astype(np.uint8)
            report.written.append(write_mask(Path(out) / path.name, mask, path))
        except LungsegError as exc:
            report.failed[str(path)] = str(exc)
    return report
