"""lungseg: lung-tumour segmentation from chest CT, built from plugins.

Plugin authors use :data:`hookimpl`, the errors below and :mod:`lungseg.api` (helpers for
each kind of component); the contract is in :mod:`lungseg.core.hookspecs` and
:mod:`lungseg.testing` checks it. Everything else in the package is internal. Importing
``lungseg`` imports neither torch nor the plugins.
"""

from __future__ import annotations

from lungseg.core.errors import DataError, LungsegError, PluginError, RecipeError
from lungseg.core.markers import hookimpl, hookspec

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
