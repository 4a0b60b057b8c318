"""Resumable HTTP downloads: ``<file>.part`` grows across attempts and interruptions.

A server that honours ``Range`` continues where the last attempt stopped; one that ignores
it starts over. Attempts that receive nothing are retried a few times with a growing pause;
any attempt that makes progress resets that count.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lungseg.core import console
from lungseg.core.errors import DataError

__all__ = ["Transfer", "file_md5"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_MAX_STALLS = 5  # attempts in a row that received nothing before giving up
_RETRY_DELAY_S = 2.0


class Transfer:
    """One file download into ``<final>.part``, resumable across attempts (HTTP Range).

    Args:
        url: what to download.
        final: where the complete file goes (renamed from ``<final>.part`` when complete).
        progress: whether to show a progress bar.
    """

    def __init__(self, url: str, final: Path, progress: bool) -> None:
        self.url, self.final, self.progress = url, final, progress
        self.part = final.with_name(final.name + ".part")
        self.received = 0  # bytes received over all attempts, to tell progress from stalls

    def size(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def attempt(self) -> bool:
        """Requests the rest of the file once; returns whether the file is now complete."""
        start = self.size()
        headers = {"User-Agent": "lungseg", "Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not start:
                raise
            total = _content_range(exc.headers.get("Content-Range", ""))[1]
            exc.close()
            if total == start:
                return True
            self.part.unlink()  # the partial file does not match the server's: start over
            return False
        with response:
            first, total = _content_range(response.headers.get("Content-Range", ""))
            if response.status == 206 and first == start:
                mode = "ab"
            elif response.status == 206:
                self.part.unlink()  # an answer for a range we did not ask for: start over
                return False
            else:  # 200: the server ignored the range, so the body is the whole file
                start, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            return self._write(response, start, total, mode)

    def _write(self, response: Any, start: int, total: int | None, mode: str) -> bool:
        written = start
        bar = console.progress(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=self.final.name, enabled=self.progress,
        )  # fmt: skip
        with bar, self.part.open(mode) as out:
            while chunk := response.read(_CHUNK):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DataError(f"cannot write {self.part}: {exc}; free disk space") from exc
                written += len(chunk)
                self.received += len(chunk)
                bar.update(len(chunk))
        return total is None or written >= total

    def run(self) -> Path:
        """Downloads until the file is complete, retrying after interruptions.

        Returns:
            The complete file (``final``).

        Raises:
            DataError: a client error (HTTP 4xx), a full disk, or as many attempts in a row
                without a byte received as ``_MAX_STALLS``.
        """
        stalls = 0
        while True:
            before = self.received
            try:
                if self.attempt():
                    break
                reason = "the connection closed early"
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    raise DataError(
                        f"{self.url} answered HTTP {exc.code} ({exc.reason}); check the URL "
                        "(--url, or data.url in the recipe)"
                    ) from exc
                reason = f"HTTP {exc.code} ({exc.reason})"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
            stalls = 0 if self.received > before else stalls + 1
            if stalls >= _MAX_STALLS:
                raise DataError(
                    f"downloading {self.url} failed {stalls} times in a row ({reason}); "
                    f"{self.size()} bytes are kept in {self.part}: run the same command again "
                    "to resume"
                )
            time.sleep(_RETRY_DELAY_S * stalls)
        self.part.replace(self.final)
        return self.final


def _content_range(value: str) -> tuple[int | None, int | None]:
    """Parses ``bytes FIRST-LAST/TOTAL`` or ``bytes */TOTAL`` into ``(FIRST, TOTAL)``."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def file_md5(path: Path) -> str:
    """Returns the hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
