"""Build the plugin manager and the registry (never at import time)."""

from __future__ import annotations

import os
from importlib import metadata

import pluggy

from lungseg.core import hookspecs
from lungseg.core.errors import PluginError
from lungseg.core.markers import ENTRY_POINT_GROUP, PROJECT
from lungseg.core.registry import KINDS, KindRegistry, Registry

#: Set to 1 to load only lungseg's own plugins (like ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).
DISABLE_AUTOLOAD_ENV = "LUNGSEG_DISABLE_PLUGIN_AUTOLOAD"
#: The distribution whose entry points are the default plugins.
DEFAULT_DISTRIBUTION = "lungseg"

_HOOKS = {
    "preprocessor": "lungseg_add_preprocessors",
    "sampler": "lungseg_add_samplers",
    "model": "lungseg_add_models",
    "loss": "lungseg_add_losses",
    "metric": "lungseg_add_metrics",
    "postprocessor": "lungseg_add_postprocessors",
}


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def get_plugin_manager(
    extra_plugins: tuple[object, ...] = (), *, entry_points: bool = True
) -> tuple[pluggy.PluginManager, dict]:
    """Create a plugin manager with every plugin of the ``lungseg`` entry-point group.

    A plugin that fails to import or to register (a bad hook name or signature) is left
    out and reported instead of breaking the others. Importing a plugin is cheap by contract
    (:mod:`lungseg.core.hookspecs`): its heavy dependencies load when a factory is called.

    Args:
        extra_plugins: plugin objects registered directly (tests, notebooks).
        entry_points: also load the entry-point group (``False``: only ``extra_plugins``,
            as :func:`lungseg.testing.check_plugin_module` registers one plugin alone).

    Returns:
        The manager and a mapping of broken plugin names to the reason.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    broken: dict[str, str] = {}
    disabled = _autoload_disabled()
    found = metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points else ()
    for ep in found:
        dist = ep.dist.name if ep.dist is not None else "?"
        if disabled and dist != DEFAULT_DISTRIBUTION:
            continue
        name = f"{dist}:{ep.name}"
        if pm.has_plugin(name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a third party's import error must not break lungseg
            broken[name] = f"import failed: {type(exc).__name__}: {exc}"
            continue
        _register(pm, plugin, name, broken)
    for i, plugin in enumerate(extra_plugins):
        _register(pm, plugin, getattr(plugin, "__name__", f"extra-{i}"), broken)
    return pm, broken


def _register(pm: pluggy.PluginManager, plugin: object, name: str, broken: dict) -> None:
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        broken[name] = f"invalid hook: {exc}"


def load_registry(extra_plugins: tuple[object, ...] = (), *, entry_points: bool = True) -> Registry:
    """Ask every plugin to add its factories and return the filled registry.

    Args:
        extra_plugins: plugin objects registered directly (tests, notebooks).
        entry_points: also load the plugins of the ``lungseg`` entry-point group.

    Raises:
        PluginError: two plugins registered the same name for one kind.
    """
    pm, broken = get_plugin_manager(extra_plugins, entry_points=entry_points)
    registry = Registry()
    registry.broken.update(broken)
    for kind in KINDS:
        hook = getattr(pm.hook, _HOOKS[kind])
        for impl in reversed(hook.get_hookimpls()):  # registration order
            if impl.plugin_name in registry.broken:
                continue
            try:
                impl.function(registry=KindRegistry(registry, kind, impl.plugin_name))
            except PluginError:
                raise
            except Exception as exc:  # a broken third-party hook is reported, not fatal
                registry.broken[impl.plugin_name] = f"{_HOOKS[kind]} failed: {exc}"
    return registry
