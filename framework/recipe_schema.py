"""Plain YAML data to typed dataclasses: every key checked, errors naming the key path."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from lungseg.errors import RecipeError


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


def build(cls: type, raw: Any, key: str) -> Any:
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
    return cls(**values)


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


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(args[0])}"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))
