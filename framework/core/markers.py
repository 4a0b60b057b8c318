"""The pluggy markers. A plugin decorates its hook functions with :data:`hookimpl`."""

from __future__ import annotations

import pluggy

PROJECT = "lungseg"
#: The entry-point group through which every plugin, the default ones included, is found.
ENTRY_POINT_GROUP = "lungseg"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
