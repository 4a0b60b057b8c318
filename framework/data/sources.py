"""Where a recipe's scans come from: make, find or fetch what its ``data:`` section names.

``data.source`` is ``synthetic`` (generated once into ``data.root``), ``folder`` (scans
already there), ``msd`` or ``kaggle`` (downloaded into ``data.root`` unless there already).
The folder layout and the finding of its cases are :mod:`lungseg.data.msd`'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lungseg.data import download
from lungseg.core.errors import DataError, OutputError
from lungseg.data.msd import locate_msd_root
from lungseg.core.recipe_sections import DataConfig, SyntheticConfig
from lungseg.core.safety import read_marker

__all__ = ["prepare_source"]


def _synthetic(root: Path, synthetic: SyntheticConfig) -> Path:
    """Generate the synthetic dataset once; reuse it while its parameters are the recipe's."""
    params = {f.name: getattr(synthetic, f.name) for f in dataclasses.fields(SyntheticConfig)}
    marker = read_marker(root)
    made = (marker.get("params") or {}) if marker else {}
    ours = marker is not None and marker["kind"] == "synthetic-dataset"
    if ours and (root / "dataset.json").is_file():
        changed = [f"{k}: {made.get(k)} -> {v}" for k, v in params.items() if made.get(k) != v]
        if changed:
            raise DataError(
                f"data.root {root} holds a synthetic dataset made with other settings "
                f"(data.synthetic {', '.join(changed)}); name a new data.root, or replace it "
                f"with `lungseg synth {root} --overwrite ...`"
            )
        return root
    from lungseg.data.synth import write_dataset  # numpy, scipy, nibabel: only when generating

    try:
        return write_dataset(root, **params)
    except OutputError as exc:
        raise OutputError(
            f"{exc}. (data.source is 'synthetic', the default, which writes generated scans "
            "into data.root: to train on scans already there, set `data.source: folder`)"
        ) from None


def _folder(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(
            f"data.root {root} does not exist; point `data.root` at an MSD-style folder "
            f"(imagesTr/, labelsTr/) or fetch one with `lungseg download msd --to {root}`"
        )
    return locate_msd_root(root) or root


def prepare_source(data: DataConfig) -> Path:
    """Makes sure the data named by a recipe's ``data`` section is on disk.

    Args:
        data: The recipe's data section (:class:`~lungseg.core.recipe_sections.DataConfig`, or
            any object with its attributes); its ``source`` was checked with the recipe.

    Returns:
        The folder holding ``imagesTr/`` and ``labelsTr/``.

    Raises:
        RecipeError: ``data.md5`` or ``data.dataset`` is malformed (checked by the download).
        DataError: The folder is missing, or fetching the data failed.
        ValueError: ``data.source`` is none of :data:`~lungseg.core.recipe_sections.Source` (only
            for a section not built by the recipe schema, which refuses it first).
    """
    root = Path(str(data.root)).expanduser()
    if data.source == "synthetic":
        return _synthetic(root, data.synthetic)
    if data.source == "folder":
        return _folder(root)
    if data.source not in ("msd", "kaggle"):
        raise ValueError(f"data.source {data.source!r}: no such source")
    existing = locate_msd_root(root)
    if existing is not None:
        return existing
    if data.source == "msd":
        url, md5 = data.url or download.MSD_URL, data.md5 or download.MSD_MD5
        return download.download_msd(root, url, md5)
    return download.download_kaggle(data.dataset, root)
