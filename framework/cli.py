"""The ``lungseg`` command: one-line errors, exit codes from :mod:`lungseg.exit_codes`."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence

from lungseg import __version__, exit_codes
from lungseg.core import console
from lungseg.core.errors import LungsegError, LungsegWarning
from lungseg.parser import add_commands

__all__ = ["build_parser", "main"]

_PYTHON_FORMAT = warnings.formatwarning


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """lungseg's own warnings as one line, like its errors; others as Python shows them."""
    if issubclass(category, LungsegWarning):
        return f"lungseg: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


def _add_global_options(p: argparse.ArgumentParser, suffix: str = "") -> None:
    """``--debug``, ``-v`` and ``-q``; accepted before and after the sub-command.

    On sub-command parsers they go to their own ``*_after`` destinations with no default,
    so a value given before the sub-command is not reset by the sub-command's parser.
    """
    group = p.add_argument_group("global options")
    counted = {"default": argparse.SUPPRESS} if suffix else {"default": 0}
    group.add_argument(
        "--debug",
        action="store_true",
        dest=f"debug{suffix}",
        default=argparse.SUPPRESS if suffix else False,
        help="show tracebacks for errors and debug messages",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest=f"verbose{suffix}",
        help="more messages (debug); repeatable",
        **counted,
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        dest=f"quiet{suffix}",
        help="warnings and errors only, no progress bars",
        **counted,
    )


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every sub-command parser under ``parser``, nested ones (``download msd``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from _subparsers(child)


def build_parser() -> argparse.ArgumentParser:
    """The ``lungseg`` parser: every sub-command, global options anywhere, exit codes below."""
    parser = argparse.ArgumentParser(
        prog="lungseg",
        description="Lung-tumour segmentation from chest CT.",
        epilog=exit_codes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lungseg {__version__}")
    _add_global_options(parser)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for child in _subparsers(parser):
        _add_global_options(child, "_after")
    return parser


def _verbosity(args: argparse.Namespace) -> int:
    """``-v`` and ``-q`` given before and after the sub-command: -1 quiet, 0 info, 1+ debug."""
    verbose = args.verbose + getattr(args, "verbose_after", 0)
    quiet = args.quiet + getattr(args, "quiet_after", 0)
    return verbose - quiet


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lungseg ARGV``; returns the exit status (:mod:`lungseg.exit_codes`).

    Usage errors, ``--help`` and ``--version`` exit through :class:`SystemExit` as argparse
    makes them; a closed stdout (``lungseg plugins | head -1``) ends quietly with 141.
    """
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in Python's exit
    except BrokenPipeError:
        return _closed_pipe()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = args.debug or getattr(args, "debug_after", False)
    verbosity = _verbosity(args)
    console.configure(max(verbosity, 1) if args.debug else verbosity)
    warnings.formatwarning = _warning_line
    try:
        shown = " ".join(sys.argv[1:] if argv is None else argv)
        console.log.debug("lungseg %s: %s", __version__, shown)
        return args.func(args)
    except LungsegError as exc:
        if args.debug:
            traceback.print_exc()
        console.log.error(f"lungseg: error: {exc}")
        return exit_codes.for_error(exc)
    except KeyboardInterrupt:
        console.log.error("lungseg: interrupted")
        return exit_codes.INTERRUPTED


def _closed_pipe() -> int:
    """stdout's reader went away: print nothing more, and let Python's exit flush nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass
    return exit_codes.BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
