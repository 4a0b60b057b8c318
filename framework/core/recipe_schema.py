"""Plain YAML data to typed dataclasses: every key checked, errors naming the key path.

:func:`build` checks each value against its field's type: ``int``, ``float``, ``str``,
``bool``, ``None``, unions, lists, mappings, nested dataclasses, :class:`Component` and
``Literal[...]`` (a fixed set of choices; the error lists them and the closest one). Value
ranges are the dataclasses' own ``__post_init__`` checks (:func:`require`), which
:func:`build` prefixes with the section's key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from lungseg.core.errors import RecipeError


@dataclass
class Component:
    """A named plugin with its parameters; in YAML ``{name: resize, size: 256}``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


def to_plain(value: Any) -> Any:
    if isinstance(value, Component):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def merge(default: Any, user: Any) -> Any:
    """User values over defaults; a component with another ``name`` replaces the default."""
    if not isinstance(default, dict) or not isinstance(user, dict):
        return user
    if "name" in default and user.get("name", default["name"]) != default["name"]:
        return user
    merged = dict(default)
    for key, value in user.items():
        merged[key] = merge(default[key], value) if key in default else value
    return merged


def apply_override(raw: dict, item: str, source: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. trainer.max_epochs=2")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(part, node, parts[: i + 1])]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, node, parts)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"--set {item!r}: {'.'.join(parts[:-1])} is not a mapping")


def _index(part: str, node: list, parts: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"--set: {'.'.join(parts)}: index must be 0..{len(node) - 1}")
    return int(part)


def _join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else name


def require(ok: bool, key: str, rule: str, value: Any) -> None:
    """A value-range check for a section's ``__post_init__``.

    The message names the field only (``max_epochs: must be >= 1, got 0``); :func:`build`
    puts the section's key path in front (``trainer.max_epochs: ...``).

    Raises:
        RecipeError: ``ok`` is false.
    """
    if not ok:
        raise RecipeError(f"{key}: must be {rule}, got {value!r}")


def build(cls: type, raw: Any, key: str) -> Any:
    """A ``cls`` dataclass from plain data, every key and value checked.

    Args:
        cls: a recipe dataclass (or :class:`Component`).
        raw: its mapping, as read from YAML.
        key: its key path in the recipe (``""`` for the whole recipe).

    Raises:
        RecipeError: an unknown key, a value of the wrong type or not among a ``Literal``'s
            choices, or a value the class's ``__post_init__`` refuses (named by key path).
    """
    if cls is Component:
        return _component(raw, key)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{key}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_file"}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(
            f"{_join(key, unknown[0])}: unknown key{hint} Known keys: {', '.join(fields)}"
        )
    values = {name: _value(hints[name], raw[name], _join(key, name)) for name in raw}
    try:
        return cls(**values)
    except RecipeError as exc:  # a range check of __post_init__, which names the field only
        raise RecipeError(_join(key, str(exc))) from None


def _component(raw: Any, key: str) -> Component:
    if isinstance(raw, str):
        return Component(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise RecipeError(f"{key}: expected {{name: PLUGIN, ...parameters}}, got {raw!r}")
    params = {k: v for k, v in raw.items() if k != "name"}
    return Component(raw["name"], params)


def _value(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _value(option, value, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        return _choice(typing.get_args(tp), value, key)
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"{key}: expected null")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_value(item, v, _join(key, i)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise RecipeError(f"{key}: expected {tp.__name__}, got {value!r}")
    if not isinstance(value, tp):
        raise RecipeError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _choice(choices: tuple[Any, ...], value: Any, key: str) -> Any:
    """``value`` when it is one of ``choices`` (same type too: ``True`` is not ``1``)."""
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    names = {str(c): c for c in choices}
    close = difflib.get_close_matches(str(value), list(names), n=1)
    hint = f"; did you mean {names[close[0]]!r}?" if close else ""
    raise RecipeError(f"{key}: {value!r} is not one of {_choices(choices)}{hint}")


def _choices(choices: tuple[Any, ...]) -> str:
    return ", ".join(repr(c) for c in choices)


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return f"one of {_choices(args)}"
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(args[0])}"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))
