"""Writing safely: lungseg writes only where it was asked, into folders it made itself.

Every folder lungseg creates (a synthetic dataset, a download folder, a run folder, a
prediction folder) holds a marker file, ``.lungseg.json``, naming what it holds. A command
writes only into a folder that is missing, empty, or marked as its own kind; it never
deletes or replaces anything in a folder without that marker, and it replaces a file it made
only when the user passed ``--overwrite``. Slice stores are recognised by their own Zarr
attributes instead (:mod:`lungseg.store.slices`).

Paths that are URLs (``s3://...``) are not checked here: object stores have no folders to
confuse, and the store checks its own attributes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lungseg.core.errors import OutputError

MARKER = ".lungseg.json"
"""The marker file's name inside every folder lungseg created."""

KINDS = ("synthetic-dataset", "download", "run", "evaluation", "predictions")
"""What a marked folder may hold."""


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a folder lungseg made, or ``None`` (no marker, or not a folder).

    Args:
        folder: Any path.

    Returns:
        The marker's content: at least ``kind`` (one of :data:`KINDS`), plus what the
        creator recorded (for example the synthetic dataset's parameters).
    """
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in KINDS else None


def write_marker(folder: Path, kind: str, info: dict[str, Any] | None = None) -> None:
    """Record that lungseg made ``folder`` to hold ``kind`` (with optional details)."""
    from lungseg import __version__

    content = {"kind": kind, "lungseg": __version__, **(info or {})}
    (folder / MARKER).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _listing(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def claim_dir(
    folder: str | os.PathLike[str],
    kind: str,
    *,
    role: str,
    info: dict[str, Any] | None = None,
) -> Path:
    """Make ``folder`` a lungseg folder of ``kind``, or confirm that it already is one.

    A missing or empty folder is created and marked; a folder marked with the same kind is
    accepted as it is (the caller decides which of its files may be replaced).

    Args:
        folder: The folder to write into.
        kind: One of :data:`KINDS`.
        role: How the user named the folder, for messages (``"output"``, ``"--out"``).
        info: Details to record in a new marker.

    Returns:
        The folder as a path.

    Raises:
        OutputError: ``folder`` is a file, holds files lungseg did not make, or is a lungseg
            folder of another kind.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{role} {path} is a file, not a folder; name a new or empty folder")
    if path.is_dir():
        marker = read_marker(path)
        if marker is not None:
            if marker["kind"] != kind:
                raise OutputError(
                    f"{role} {path} is a lungseg {marker['kind']} folder, not a {kind} folder; "
                    "name another folder"
                )
            return path
        if any(path.iterdir()):
            raise OutputError(
                f"{role} {path} holds files lungseg did not make ({_listing(path)}); lungseg "
                "writes only into a new or empty folder, or one it made: name another folder"
            )
    path.mkdir(parents=True, exist_ok=True)
    write_marker(path, kind, info)
    return path


def refuse_existing(paths: Iterable[Path], overwrite: bool, what: str = "output") -> None:
    """Refuse to replace existing files unless ``overwrite`` (the user's ``--overwrite``).

    Raises:
        OutputError: naming the first existing file and how many more there are.
    """
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(
            f"{what} {existing[0]} exists{more}; pass --overwrite to replace it, "
            "or write somewhere else"
        )


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL such as ``s3://bucket/x`` rather than a local path."""
    return "://" in str(path)


def _real(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_separate(named: dict[str, str], pairs: Iterable[tuple[str, str]]) -> None:
    """Refuse recipe paths that are equal or nested (a store inside the data it reads).

    Args:
        named: Recipe key -> path, e.g. ``{"store.path": ..., "data.root": ...}``.
        pairs: The keys that must name separate places; both nestings are refused.

    Raises:
        OutputError: naming both keys and paths.
    """
    for a, b in pairs:
        if is_url(named[a]) or is_url(named[b]):
            continue
        pa, pb = _real(named[a]), _real(named[b])
        if _within(pa, pb) or _within(pb, pa):
            how = "is" if pa == pb else "is inside" if _within(pa, pb) else "contains"
            raise OutputError(
                f"{a} ({named[a]}) {how} {b} ({named[b]}); lungseg would write into its own "
                f"input or output: give {a} a separate folder"
            )


def check_recipe_paths(recipe: Any) -> None:
    """The recipe's store, data and output folders must not be the same or nested.

    ``store.path`` may be neither equal to, inside, nor around ``data.root`` or ``output``;
    ``output`` may not be ``data.root`` or contain it.

    Raises:
        OutputError: naming the two keys.
    """
    named = {
        "store.path": recipe.store.path,
        "data.root": recipe.data.root,
        "output": recipe.output,
    }
    check_separate(named, [("store.path", "data.root"), ("store.path", "output")])
    if not (is_url(named["output"]) or is_url(named["data.root"])):
        out, root = _real(named["output"]), _real(named["data.root"])
        if _within(root, out):
            raise OutputError(
                f"output ({named['output']}) {'is' if out == root else 'contains'} data.root "
                f"({named['data.root']}); lungseg would write among the scans: give output a "
                "separate folder"
            )
