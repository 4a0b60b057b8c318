"""What lungseg says while it works: log messages to stderr, results to stdout, progress bars.

- Messages (what a stage is doing, warnings) go through the ``lungseg`` :mod:`logging`
  logger to stderr; ``-v`` shows debug messages, ``-q`` only warnings and errors.
- Results (paths written, figures) go to stdout through :func:`result`, so
  ``lungseg evaluate r.yaml > out.txt`` keeps exactly those.
- Progress bars (:func:`progress`) are tqdm bars on stderr, shown only when stderr is a
  terminal and ``-q`` was not given, so batch-job logs stay readable.

Library code calls :func:`progress` and ``log``; only the command line calls
:func:`configure`. Without it (lungseg used as a library) messages follow the caller's
logging setup and bars follow the terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

log = logging.getLogger("lungseg")

_settings: dict[str, bool | None] = {"progress": None}  # None: follow the terminal


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after setup)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(verbosity: int = 0, progress: bool | None = None) -> None:
    """Set up lungseg's messages for the command line.

    Args:
        verbosity: -1 or less: warnings and errors only (``-q``); 0: info; 1 or more: debug.
        progress: force progress bars on or off; ``None``: on when stderr is a terminal
            and ``verbosity >= 0``.
    """
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    _settings["progress"] = False if verbosity < 0 and progress is None else progress


def progress_enabled() -> bool:
    """Whether progress bars are shown: as configured, else when stderr is a terminal."""
    forced = _settings["progress"]
    if forced is not None:
        return forced
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on stderr that is off unless :func:`progress_enabled` (and ``enabled``).

    Args:
        iterable: what to iterate over, or ``None`` for a bar updated by hand.
        desc: the bar's label (the stage: ``"preprocess"``, ``"predict"``...).
        total: the number of steps, when ``iterable`` has no length.
        unit: what one step is (``"case"``, ``"scan"``, ``"B"``...).
        enabled: the caller's own switch (a library argument such as ``progress=False``).
        **kwargs: passed to :class:`tqdm.tqdm`.
    """
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=not (enabled and progress_enabled()),
        **kwargs,
    )


def result(text: str) -> None:
    """Print one line of a command's results (a path written, a figure) to stdout."""
    print(text, flush=True)
