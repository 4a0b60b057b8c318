"""Named factories contributed by plugins, and their creation from recipe entries."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lungseg.core.errors import PluginError, RecipeError

#: The kinds of component a plugin can add, in the order ``lungseg plugins`` lists them.
KINDS = ("preprocessor", "sampler", "model", "loss", "metric", "postprocessor")


_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :class:`~a.B` -> a.B
_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")


def plain_text(text: str) -> str:
    """``text`` without reStructuredText markup: ``:class:`~a.B``` -> ``a.B``, ````x```` -> ``x``.

    Descriptions come from docstrings; ``lungseg plugins`` shows them as plain text.
    """
    text = _ROLE.sub(lambda m: m.group(1), text)
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


@dataclass(frozen=True)
class Entry:
    """One registered factory."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword parameters a recipe may set, by name."""
        return {
            p.name: p
            for p in inspect.signature(self.factory).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def signature(self) -> str:
        """Parameters with defaults, for ``lungseg plugins``."""
        parts = []
        for p in self.parameters().values():
            parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
        return ", ".join(parts)


class KindRegistry:
    """The view of the registry a hook receives: adds factories of one kind for one plugin."""

    def __init__(self, registry: Registry, kind: str, plugin: str) -> None:
        self._registry = registry
        self.kind = kind
        self.plugin = plugin

    def add(self, name: str, factory: Callable[..., Any], description: str | None = None) -> None:
        """Register ``factory`` under ``name``.

        Args:
            name: the name recipes use (lower case, words joined by ``-``).
            factory: a callable whose keyword parameters are the recipe parameters.
            description: one line for ``lungseg plugins``; defaults to the first line of the
                factory's docstring.

        Raises:
            PluginError: ``name`` is already registered for this kind (names both plugins).
        """
        self._registry.add(self.kind, name, factory, self.plugin, description)


class Registry:
    """All factories, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        #: Plugins that failed to load or register: plugin name -> reason.
        self.broken: dict[str, str] = {}

    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        plugin: str,
        description: str | None = None,
    ) -> None:
        if kind not in self._entries:
            raise PluginError(f"plugin {plugin!r}: unknown kind {kind!r}; kinds are {KINDS}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r}: the {kind} {name!r} is not callable")
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"the {kind} name {name!r} is registered twice: by plugin {existing.plugin!r} "
                f"and by plugin {plugin!r}; uninstall one of them or rename one"
            )
        if description is None:
            doc = inspect.getdoc(factory) or ""
            description = doc.splitlines()[0] if doc else ""
        description = plain_text(description)
        self._entries[kind][name] = Entry(kind, name, factory, plugin, description)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> Iterator[Entry]:
        for name in self.names(kind):
            yield self._entries[kind][name]

    def get(self, kind: str, name: str, key: str = "") -> Entry:
        """The entry for ``name``, or a :class:`RecipeError` listing the options.

        Args:
            kind: one of :data:`KINDS`.
            name: the registered name.
            key: the recipe key path, for the message (``model.name``).
        """
        try:
            return self._entries[kind][name]
        except KeyError:
            pass
        options = self.names(kind)
        close = difflib.get_close_matches(str(name), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = f"{key}: " if key else ""
        raise RecipeError(
            f"{where}unknown {kind} {name!r}{hint} Available: {', '.join(options) or 'none'}"
            + (
                f". Plugins that failed to load: {', '.join(sorted(self.broken))}"
                if self.broken
                else ""
            )
        )

    def check(
        self,
        kind: str,
        name: str,
        params: Mapping[str, Any],
        key: str,
        context: tuple[str, ...] = (),
    ) -> Entry:
        """Check a recipe entry's name and parameter names without building it.

        Raises:
            RecipeError: unknown name, unknown parameter or missing required parameter.
        """
        entry = self.get(kind, name, f"{key}.name")
        accepted = entry.parameters()
        takes_any = any(
            p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values()
        )
        for param in params:
            if param not in accepted and not takes_any:
                close = difflib.get_close_matches(param, list(accepted), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise RecipeError(
                    f"{key}.{param}: the {kind} {name!r} has no parameter {param!r}{hint} "
                    f"It takes: {entry.signature() or 'no parameters'}"
                )
        missing = [
            p.name
            for p in accepted.values()
            if p.default is p.empty and p.name not in params and p.name not in context
        ]
        if missing:
            raise RecipeError(f"{key}: the {kind} {name!r} needs {', '.join(missing)}")
        return entry

    def create(self, kind: str, name: str, params: Mapping[str, Any], key: str, **context: Any):
        """Build a component from a recipe entry.

        Args:
            kind: one of :data:`KINDS`.
            name: the registered name.
            params: the recipe's parameters for it.
            key: the recipe key path of the entry (``model``, ``preprocess[2]``), for messages.
            **context: keyword arguments lungseg itself supplies (not settable from recipes).

        Raises:
            RecipeError: unknown name, or a parameter the factory does not accept, or the
                factory rejected a value (the message names the key path).
        """
        entry = self.check(kind, name, params, key, tuple(context))
        try:
            return entry.factory(**context, **params)
        except (ValueError, TypeError) as exc:
            raise RecipeError(f"{key}: {kind} {name!r} rejected its parameters: {exc}") from exc
