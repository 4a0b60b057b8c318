"""MSD-style data folders: find the cases in one, or the one under a download.

An MSD-style folder (the layout of the Medical Segmentation Decathlon's Task06_Lung) holds
``imagesTr/`` and ``labelsTr/`` with one NIfTI file per case, paired by file name, an optional
``imagesTs/`` of unlabelled scans and an optional ``dataset.json``: the MSD's, listing the
training pairs, or nnU-Net v2's (``channel_names``, ``file_ending``, images named
``<case>_0000.nii.gz``; see :mod:`lungseg.data.nnunet`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lungseg.core.errors import DataError
from lungseg.data.nnunet import check_single_channel, is_nnunet_index, nnunet_cases, strip_channels

__all__ = ["Case", "case_id_of", "find_cases", "find_msd_root", "locate_msd_root"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Case:
    """One scan, and its tumour mask when it has one.

    Attributes:
        case_id: The image file name without ``.nii.gz`` / ``.nii``, e.g. ``"lung_001"``.
        image: Path of the CT volume.
        label: Path of the mask volume, or ``None`` for an unlabelled scan.
    """

    case_id: str
    image: Path
    label: Path | None


def case_id_of(path: str | os.PathLike[str]) -> str | None:
    """Returns the case id of a NIfTI file name, or ``None`` when the name is not a NIfTI file.

    Args:
        path: A file name or path.

    Returns:
        The name without its ``.nii.gz`` / ``.nii`` suffix, or ``None``.
    """
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> dict[str, Path]:
    """Maps case id to path for the NIfTI files of ``folder``, skipping hidden and ``._`` files."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():  # also macOS "._" resource files
            continue
        case_id = case_id_of(path)
        if case_id is not None:
            found[case_id] = path
    return found


def _fix_hint(root: Path) -> str:
    return (
        f"point `data.root` at a folder holding imagesTr/ and labelsTr/, or fetch the data with "
        f"`lungseg download msd --to {root}`"
    )


def _read_index(index: Path) -> dict:
    """The parsed ``dataset.json``: a JSON object, else a :class:`DataError`."""
    try:
        parsed = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{index} is not a readable JSON dataset.json ({exc}); fix it") from exc
    if not isinstance(parsed, dict):
        raise DataError(f"{index} is not a readable dataset.json: a JSON object was expected")
    return parsed


def _from_dataset_json(root: Path, index: Path, content: dict) -> list[Case]:
    """Reads the ``training`` pairs of an MSD ``dataset.json``."""
    check_single_channel(content, index)
    try:
        pairs = [(str(entry["image"]), str(entry["label"])) for entry in content["training"]]
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{index} is not a readable MSD dataset.json: its 'training' list must hold "
            f"{{'image': ..., 'label': ...}} entries ({type(exc).__name__}: {exc}); fix it"
        ) from exc
    cases: list[Case] = []
    missing: list[str] = []
    for image_rel, label_rel in pairs:
        image, label = root / image_rel, root / label_rel
        missing += [str(p) for p in (image, label) if not p.is_file()]
        case_id = case_id_of(image)
        if case_id is None:
            raise DataError(f"{index} lists {image_rel!r}, which is not a .nii.gz or .nii file")
        cases.append(Case(case_id, image, label))
    if missing:
        raise DataError(
            f"{index} lists {len(missing)} file(s) that do not exist: {', '.join(missing)}; "
            "restore them, or remove their entries from its 'training' list"
        )
    return cases


def _indexed(root: Path, index: Path, *, labelled: bool) -> list[Case] | None:
    """The cases ``dataset.json`` names (MSD or nnU-Net v2), or ``None`` to pair by name."""
    if not index.is_file():
        return None
    content = _read_index(index)
    if is_nnunet_index(content):
        return [Case(*c) for c in nnunet_cases(root, content, index, labelled=labelled)]
    if "training" not in content:
        raise DataError(
            f"{index} has neither the MSD's 'training' list nor nnU-Net v2's keys "
            "('channel_names', 'labels', 'numTraining', 'file_ending'); complete it in one of "
            "the two formats (the MSD's lists {'image': ..., 'label': ...} pairs)"
        )
    if not labelled:
        check_single_channel(content, index)
        return None  # the MSD's 'test' list is optional: imagesTs/ is read as it is
    return _from_dataset_json(root, index, content)


def _paired_by_name(root: Path, images_dir: Path) -> list[Case]:
    """Pairs ``imagesTr`` with ``labelsTr`` by file name, reporting every unpaired file."""
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise DataError(f"{root} has imagesTr/ but no labelsTr/ folder; {_fix_hint(root)}")
    labels = _nifti_files(labels_dir)
    images = strip_channels(_nifti_files(images_dir), set(labels), images_dir)
    unpaired = [f"{images[c]} (no label)" for c in sorted(images.keys() - labels.keys())]
    unpaired += [f"{labels[c]} (no image)" for c in sorted(labels.keys() - images.keys())]
    if unpaired:
        raise DataError(
            f"{len(unpaired)} unpaired file(s) in {root}: {'; '.join(unpaired)}; every image in "
            "imagesTr/ needs a label of the same file name in labelsTr/ (or, nnU-Net's naming, "
            "<case>_0000 images with <case> labels): add or remove them"
        )
    return [Case(c, images[c], labels[c]) for c in images]


def find_cases(root: str | os.PathLike[str], *, labelled: bool = True) -> list[Case]:
    """Lists the cases of an MSD-style data folder.

    Args:
        root: The folder holding ``imagesTr/`` and ``labelsTr/`` (and maybe ``imagesTs/``).
        labelled: ``True`` for the training cases (``imagesTr`` paired with ``labelsTr``, as
            listed by an MSD ``dataset.json``, as nnU-Net v2 names them when its
            ``dataset.json`` is there, else by file name, ``<case>_0000`` images included);
            ``False`` for the unlabelled ``imagesTs`` scans (``label`` is ``None``).

    Returns:
        The cases, sorted by ``case_id``.

    Raises:
        DataError: ``root`` or its image folder is missing or empty, ``dataset.json`` is broken
            or names missing files, files are unpaired (all of them named in one message), or
            the scans have several channels (``_0001`` files; CT only).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; {_fix_hint(root)}")
    folder = "imagesTr" if labelled else "imagesTs"
    images_dir = root / folder
    if not images_dir.is_dir():
        raise DataError(f"{root} has no {folder}/ folder; {_fix_hint(root)}")
    cases = _indexed(root, root / "dataset.json", labelled=labelled)
    if cases is None and labelled:
        cases = _paired_by_name(root, images_dir)
    elif cases is None:
        images = strip_channels(_nifti_files(images_dir), None, images_dir)
        cases = [Case(c, p, None) for c, p in images.items()]
    if not cases:
        raise DataError(f"{images_dir} holds no .nii.gz / .nii images; {_fix_hint(root)}")
    return sorted(cases, key=lambda case: case.case_id)


def _walk_dirs(top: Path, max_depth: int = 4) -> Iterator[Path]:
    """Yields ``top`` and its sub-folders breadth first, skipping hidden ones and cycles."""
    queue: list[tuple[Path, int]] = [(top, 0)]
    seen: set[Path] = set()
    while queue:
        folder, depth = queue.pop(0)
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        yield folder
        if depth >= max_depth or folder.name in ("imagesTr", "labelsTr", "imagesTs"):
            continue
        try:
            children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            continue
        queue += [(p, depth + 1) for p in children if p.is_dir()]


def locate_msd_root(top: str | os.PathLike[str]) -> Path | None:
    """Returns the shallowest folder under ``top`` holding ``imagesTr/`` and ``labelsTr/``.

    Args:
        top: Where to search (``top`` itself included, four levels deep); hidden folders
            are skipped.

    Returns:
        That folder, or ``None`` when there is none (or ``top`` does not exist).
    """
    top = Path(top)
    if not top.is_dir():
        return None
    for folder in _walk_dirs(top):
        if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
            return folder
    return None


def find_msd_root(top: str | os.PathLike[str]) -> Path:
    """Like :func:`locate_msd_root`, but raises when there is no MSD layout under ``top``.

    Args:
        top: Where to search.

    Returns:
        The shallowest folder holding ``imagesTr/`` and ``labelsTr/``.

    Raises:
        DataError: No such folder exists under ``top``.
    """
    found = locate_msd_root(top)
    if found is None:
        raise DataError(
            f"no folder holding both imagesTr/ and labelsTr/ was found under {top}; "
            "the data must use the MSD Task06_Lung layout"
        )
    return found
