"""lungseg: lung-tumour segmentation from chest CT, built from plugins.

The public surface for plugin authors is :data:`hookimpl` and the registry passed to
each hook (see :mod:`lungseg.hookspecs`).
"""

from __future__ import annotations

from lungseg.errors import DataError, LungsegError, PluginError, RecipeError
from lungseg.markers import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "LungsegError",
    "PluginError",
    "RecipeError",
    "__version__",
    "hookimpl",
    "hookspec",
]
