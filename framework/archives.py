"""Safe extraction of tar and zip archives: nothing lands outside the target folder.

Every member is checked before anything is written (absolute paths, ``..`` components,
links leaving the target, device files are refused), extraction happens in a hidden staging
folder, and entries move into the target only when everything succeeded.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from lungseg.errors import DataError

_FILTER_ERROR: Any = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4


def _member_path(name: str, archive: Path) -> str:
    """Returns a member's normalised relative path, refusing absolute paths and ``..``."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"[A-Za-z]:", unified):
        raise DataError(f"{archive} holds {name!r}, an absolute path; refusing to extract it")
    if ".." in unified.split("/"):
        raise DataError(f"{archive} holds {name!r}, which climbs out with '..'; refusing it")
    return posixpath.normpath(unified)


def _escapes(path: str) -> bool:
    return path.startswith("/") or path == ".." or path.startswith("../")


def _check_tar(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuses members that would land, or link, outside the target folder."""
    paths = [_member_path(m.name, archive) for m in members]
    symlinks = {p for m, p in zip(members, paths, strict=True) if m.issym()}
    for member, path in zip(members, paths, strict=True):
        parents = path.split("/")[:-1]
        through = [
            p for p in ("/".join(parents[: i + 1]) for i in range(len(parents))) if p in symlinks
        ]
        if through:
            raise DataError(
                f"{archive} holds {member.name!r}, which goes through the symlink "
                f"{through[0]!r}; refusing to extract it"
            )
        if member.issym() or member.islnk():
            base = posixpath.dirname(path) if member.issym() else ""
            target = posixpath.normpath(posixpath.join(base, member.linkname))
            if member.linkname.startswith("/") or _escapes(target):
                raise DataError(
                    f"{archive} holds {member.name!r}, a link to {member.linkname!r} outside "
                    "the target folder; refusing to extract it"
                )
        elif not (member.isfile() or member.isdir()):
            raise DataError(
                f"{archive} holds {member.name!r}, a device or FIFO; refusing to extract it"
            )


def _unpack(archive: Path, into: Path) -> None:
    """Checks every member of a tar or zip archive, then unpacks it into ``into``."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _member_path(info.filename, archive)
                for info in infos:
                    zf.extract(info, into)
            return
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            _check_tar(members, archive)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(into, members=members, filter="data")
            else:  # Python < 3.11.4: the checks above are the only guard
                tf.extractall(into, members=members)
    except _FILTER_ERROR as exc:
        name = exc.tarinfo.name
        raise DataError(f"{archive} holds {name!r}, which is unsafe ({exc}); refusing it") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{archive} is not a readable tar or zip archive ({exc}); delete it and download "
            "it again"
        ) from exc


def extract_archive(archive: str | os.PathLike[str], to: str | os.PathLike[str]) -> None:
    """Safely unpacks a tar (any compression) or zip archive into ``to``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links leaving ``to`` and special files are refused. The archive is unpacked into a hidden
    folder first and its top-level entries are moved into ``to`` only when all went well.

    Args:
        archive: The archive file.
        to: The target folder (created when missing).

    Raises:
        DataError: A member is unsafe (named in the message), the archive is broken, or one
            of its top-level entries already exists in ``to``.
    """
    archive, to = Path(archive), Path(to)
    staging = to / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _unpack(archive, staging)
        entries = sorted(staging.iterdir())
        clashes = [str(to / e.name) for e in entries if (to / e.name).exists()]
        if clashes:
            raise DataError(
                f"unpacking {archive} would overwrite {', '.join(clashes)}; move or delete "
                "them and run again"
            )
        for entry in entries:
            entry.replace(to / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
