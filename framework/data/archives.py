"""Safe extraction of tar and zip archives: nothing lands outside the target folder.

Every member is checked before anything is written (absolute paths, ``..`` components,
links that resolve outside the target, device files are refused), extraction happens in a
hidden staging folder, and entries move into the target only when everything succeeded.
Links are judged by where they resolve, following the archive's own symlinks, not by their
text.
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

from lungseg.core.errors import DataError

_FILTER_ERROR: Any = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4


def _member_path(name: str, archive: Path) -> str:
    """Returns a member's normalised relative path, refusing absolute paths and ``..``."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"[A-Za-z]:", unified):
        raise DataError(f"{archive} holds {name!r}, an absolute path; refusing to extract it")
    if ".." in unified.split("/"):
        raise DataError(f"{archive} holds {name!r}, which climbs out with '..'; refusing it")
    return posixpath.normpath(unified)


_MAX_HOPS = 40  # symlinks followed while resolving one path, as Linux's ELOOP limit


class _Escapes(Exception):
    """A path resolves outside the extraction folder (internal to :func:`_resolve`)."""


def _link_parts(text: str) -> list[str]:
    """A link text's components (backslashes count as separators, as on Windows)."""
    unified = text.replace("\\", "/")
    if unified.startswith("/") or re.match(r"[A-Za-z]:", unified):
        raise _Escapes
    return unified.split("/")


def _resolve(base: str, text: str, links: dict[str, str], archive: Path, name: str) -> str:
    """Where the link text ``text``, read in the folder ``base``, lands once extracted.

    Follows every symlink the archive creates (``links``: member path -> link text), including
    links to links and links through symlinked folders, as the operating system would.
    Backslashes count as separators, as they would on Windows.

    Args:
        base: the folder the text is relative to (``""``: the target folder itself).
        text: the link text.
        links: every symlink of the archive, normalised member path -> link text.
        archive: the archive, for messages.
        name: the member being checked, for messages.

    Returns:
        The resolved path, relative to the target folder.

    Raises:
        _Escapes: the path, or one step of resolving it, climbs out of the target folder or
            names an absolute path.
        DataError: the links form a loop.
    """
    done: list[str] = []  # resolved components: real folders and files, never symlinks
    todo = base.split("/") + _link_parts(text)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                raise _Escapes
            done.pop()
            continue
        link = links.get("/".join([*done, part]))
        if link is None:
            done.append(part)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            raise DataError(
                f"{archive} holds {name!r}, whose links form a loop; refusing to extract it"
            )
        todo = _link_parts(link) + todo  # relative to the folder holding that link: ``done``
    return "/".join(done)


def _check_tar(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuses members that would land, or link, outside the target folder.

    Links are judged by where they resolve once every symlink in the archive exists (whatever
    the members' order), not by their text: ``d/l -> ..`` then ``esc -> d/l/../..`` escapes.
    """
    paths = [_member_path(m.name, archive) for m in members]
    links: dict[str, str] = {}
    for member, path in zip(members, paths, strict=True):
        if member.issym():
            links[path] = member.linkname
    seen: set[str] = set()
    for member, path in zip(members, paths, strict=True):
        if path in links and path in seen:
            raise DataError(
                f"{archive} holds {member.name!r} more than once, once as a symlink that the "
                "other would be written through; refusing to extract it"
            )
        seen.add(path)
        parents = path.split("/")[:-1]
        through = [
            p for p in ("/".join(parents[: i + 1]) for i in range(len(parents))) if p in links
        ]
        if through:
            raise DataError(
                f"{archive} holds {member.name!r}, which goes through the symlink "
                f"{through[0]!r}; refusing to extract it"
            )
        if member.issym() or member.islnk():
            # a symlink's text is relative to its folder, a hard link's to the archive root
            base = posixpath.dirname(path) if member.issym() else ""
            try:
                _resolve(base, member.linkname, links, archive, member.name)
            except _Escapes:
                raise DataError(
                    f"{archive} holds {member.name!r}, a link to {member.linkname!r} that "
                    "resolves outside the target folder; refusing to extract it"
                ) from None
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
    links resolving outside ``to`` (following the archive's own symlinks, links to links and
    links through symlinked folders) and special files are refused. The archive is unpacked
    into a hidden folder first and its top-level entries are moved into ``to`` only when all
    went well.

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
