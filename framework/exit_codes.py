"""The exit statuses of the ``lungseg`` command: one per kind of outcome, listed in its help.

Scripts and schedulers can tell a mistake to fix (2) from data to look at (3), a batch of
scans that was only partly predicted (4) and an interruption (130) without parsing messages.
"""

from __future__ import annotations

from lungseg.core.errors import CheckpointError, DataError, LungsegError

OK = 0
"""Success: every output was written (or was already complete)."""

USAGE = 2
"""A usage or recipe error: a bad option (argparse's own usage errors are 2 too), a recipe
key (:class:`~lungseg.core.errors.RecipeError`), a plugin
(:class:`~lungseg.core.errors.PluginError`) or a refused output path
(:class:`~lungseg.core.errors.OutputError`). Fix the command line or recipe and rerun."""

DATA = 3
"""A data error: input scans, labels, a store or a checkpoint that is missing or unusable
(:class:`~lungseg.core.errors.DataError`, :class:`~lungseg.core.errors.CheckpointError`)."""

PARTIAL = 4
"""``predict`` with several inputs: some failed (each named on stderr), the others written."""

INTERRUPTED = 130
"""Interrupted (Ctrl-C, SIGINT): 128 + 2, as shells report it."""

BROKEN_PIPE = 141
"""The reader of stdout went away (``lungseg plugins | head -1``): 128 + SIGPIPE (13), as
shells report a command ended by a closed pipe; nothing is printed."""

TABLE = (
    (OK, "success"),
    (USAGE, "usage or recipe error (bad option, recipe key, plugin, refused output path)"),
    (DATA, "data error (missing or unusable scans, labels, store or checkpoint)"),
    (PARTIAL, "predict: some inputs failed, the others were written"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
    (BROKEN_PIPE, "stdout closed early (e.g. piped into head); quiet"),
)
"""Every status with one line of meaning, for ``lungseg --help``."""


def for_error(exc: LungsegError) -> int:
    """The exit status of an error lungseg raised on purpose: :data:`DATA` or :data:`USAGE`."""
    return DATA if isinstance(exc, DataError | CheckpointError) else USAGE


def epilog() -> str:
    """The exit-status table shown at the end of ``lungseg --help``."""
    rows = "\n".join(f"  {code:<4} {meaning}" for code, meaning in TABLE)
    return f"exit status:\n{rows}"
