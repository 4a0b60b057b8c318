"""One error hierarchy: callers catch ours, and the CLI prints them without a traceback."""

from __future__ import annotations


class LungsegError(Exception):
    """Base class of every error lungseg raises on purpose (user mistakes, bad data)."""


class RecipeError(LungsegError, ValueError):
    """A recipe (YAML file or ``--set`` override) is malformed; the message names the key path."""


class DataError(LungsegError):
    """Input data (a NIfTI file, a data folder, a store) is missing or unusable; names the file."""


class PluginError(LungsegError):
    """A plugin could not be loaded or registered, or registered a name twice."""


class CheckpointError(LungsegError):
    """A checkpoint is missing, unsafe, or lacks what lungseg needs (for example its recipe)."""


class LungsegWarning(UserWarning):
    """Warnings lungseg emits (tests turn them into errors so new ones are seen)."""


class OutputError(LungsegError):
    """A write was refused to protect existing files: the message names the path and the fix."""
