"""nnU-Net v2 raw datasets (``DatasetXXX_Name/``) and the channel suffixes of their file names.

nnU-Net v2 keeps the MSD folders (``imagesTr/``, ``labelsTr/``, ``imagesTs/``) but its
``dataset.json`` lists no cases: it has ``channel_names`` (``{"0": "CT"}``), ``labels``
(``{"background": 0, "tumour": 1}``), ``numTraining`` and ``file_ending`` (``.nii.gz``), and
each image file carries a channel suffix: ``imagesTr/<case>_0000<file_ending>`` is paired with
``labelsTr/<case><file_ending>``. lungseg segments single-channel CT, so a second channel
(``_0001``) is refused, as is a ``file_ending`` other than ``.nii.gz`` / ``.nii``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lungseg.core.errors import DataError

__all__ = [
    "CHANNEL_SUFFIX",
    "FILE_ENDINGS",
    "check_single_channel",
    "is_nnunet_index",
    "nnunet_cases",
    "strip_channels",
]

FILE_ENDINGS = (".nii.gz", ".nii")
CHANNEL_SUFFIX = "_0000"
"""The suffix of the first (for CT, the only) channel's image files."""
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_CT_ONLY = "lungseg segments single-channel CT"


def is_nnunet_index(index: dict[str, Any]) -> bool:
    """Whether a ``dataset.json`` is nnU-Net v2's (no ``training`` list, its own keys)."""
    return "training" not in index and any(
        key in index for key in ("channel_names", "file_ending", "numTraining")
    )


def check_single_channel(index: dict[str, Any], path: Path) -> None:
    """Refuse a ``dataset.json`` whose ``channel_names`` (or MSD ``modality``) lists several.

    Raises:
        DataError: naming the file, the key and its channels.
    """
    key = "channel_names" if "channel_names" in index else "modality"
    channels = index.get(key)
    if channels is None:
        return
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: {key} must map channel numbers to names, e.g. {{'0': 'CT'}}")
    if len(channels) > 1:
        named = ", ".join(f"{k}: {v}" for k, v in channels.items())
        raise DataError(
            f"{path}: {key} lists {len(channels)} channels ({named}); {_CT_ONLY}: keep only "
            "the CT channel (files ending _0000) and list only it"
        )


def strip_channels(
    images: dict[str, Path], labels: set[str] | None, folder: Path
) -> dict[str, Path]:
    """Case ids of image files that may carry nnU-Net channel suffixes.

    A file ``<case>_0000`` becomes case ``<case>`` when ``labels`` (the label case ids) has
    ``<case>`` and not the full name, or, without labels (``imagesTs``), when every file has a
    channel suffix. Other names are kept as they are (the MSD's ``lung_001``).

    Args:
        images: case id (file name without its NIfTI suffix) to path.
        labels: the label case ids to pair with, or ``None`` for unlabelled scans.
        folder: the image folder, for messages.

    Returns:
        Case id to path, one file per case.

    Raises:
        DataError: a case has a second channel (``_0001``...).
    """
    parsed = {name: _CHANNEL.match(name) for name in images}
    if labels is None:
        suffixed = all(parsed.values()) and any(m["channel"] == "0000" for m in parsed.values())
        use = {name: bool(suffixed) for name in images}
    else:
        use = {n: bool(m and n not in labels and m["case"] in labels) for n, m in parsed.items()}
    found: dict[str, Path] = {}
    for name, path in images.items():
        match = parsed[name]
        if not use[name]:
            found[name] = path
        elif match["channel"] != "0000":
            raise multi_channel(path, folder)
        else:
            found[match["case"]] = path
    return found


def multi_channel(path: Path, folder: Path) -> DataError:
    """The error for an image file of a second channel."""
    return DataError(
        f"{path} is a second image channel ({path.name}); {_CT_ONLY}: keep only the "
        f"<case>_0000 files in {folder.name}/ (and one channel in dataset.json)"
    )


def file_ending(index: dict[str, Any], path: Path) -> str:
    """``file_ending`` of an nnU-Net ``dataset.json`` (``.nii.gz`` when absent).

    Raises:
        DataError: not a NIfTI ending.
    """
    ending = index.get("file_ending", ".nii.gz")
    if ending not in FILE_ENDINGS:
        raise DataError(
            f"{path}: file_ending {ending!r}: lungseg reads NIfTI; convert the images and "
            "labels to .nii.gz and set file_ending: '.nii.gz'"
        )
    return ending


def _files(folder: Path, ending: str) -> dict[str, Path]:
    """Name without ``ending`` to path, for the visible files of ``folder`` ending so."""
    if not folder.is_dir():
        return {}
    return {
        p.name[: -len(ending)]: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(ending)
        and len(p.name) > len(ending)
    }  # fmt: skip


def nnunet_cases(root: Path, index: dict[str, Any], path: Path, *, labelled: bool = True):
    """The cases of an nnU-Net v2 dataset: ``(case_id, image, label or None)`` triples.

    Args:
        root: the dataset folder (``Dataset006_Lung/``).
        index: its parsed ``dataset.json``.
        path: the ``dataset.json`` path, for messages.
        labelled: ``imagesTr`` with ``labelsTr`` (``True``) or ``imagesTs`` (``False``).

    Raises:
        DataError: several channels, a non-NIfTI ``file_ending``, an image without the
            ``_0000`` suffix, unpaired files, or ``numTraining`` differing from the files.
    """
    check_single_channel(index, path)
    ending = file_ending(index, path)
    folder = root / ("imagesTr" if labelled else "imagesTs")
    images: dict[str, Path] = {}
    for name, image in _files(folder, ending).items():
        match = _CHANNEL.match(name)
        if match is None:
            raise DataError(
                f"{image}: no channel suffix; {path} is nnU-Net v2's, which names images "
                f"<case>_0000{ending} (rename it, e.g. {name}_0000{ending})"
            )
        if match["channel"] != "0000":
            raise multi_channel(image, folder)
        images[match["case"]] = image
    if not labelled:
        return [(case, image, None) for case, image in images.items()]
    labels = _files(root / "labelsTr", ending)
    unpaired = [f"{images[c]} (no label {c}{ending})" for c in sorted(images.keys() - labels)]
    unpaired += [f"{labels[c]} (no image {c}_0000{ending})" for c in sorted(labels.keys() - images)]
    if unpaired:
        raise DataError(
            f"{len(unpaired)} unpaired file(s) in {root}: {'; '.join(unpaired)}; nnU-Net pairs "
            f"imagesTr/<case>_0000{ending} with labelsTr/<case>{ending} (add or remove them)"
        )
    expected = index.get("numTraining")
    if expected is not None and expected != len(images):
        raise DataError(
            f"{path}: numTraining is {expected} but {root / 'imagesTr'} holds {len(images)} "
            f"case(s); set numTraining: {len(images)} or restore the missing cases"
        )
    return [(case, images[case], labels[case]) for case in images]
