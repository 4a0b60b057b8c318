"""YAML recipes as typed objects: load, override with ``--set``, validate, save.

Every key is checked: an unknown key, a wrong type or a bad value is a :class:`RecipeError`
naming the recipe file and the key path (``trainer.max_epochs``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass
class SyntheticConfig:
    """Parameters of the built-in synthetic CT data (``data.source: synthetic``)."""

    cases: int = 16
    seed: int = 0
    size: int = 64
    slices: int = 72
    abdomen_slices: int = 30
    test_cases: int = 2


@dataclass
class DataConfig:
    """Where the CT scans come from. ``root`` holds (or will hold) the MSD layout."""

    source: str = "synthetic"
    root: str = "data/synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    url: str | None = None
    md5: str | None = None
    dataset: str | None = None


@dataclass
class StoreConfig:
    """The Zarr slice store: a local path or an fsspec URL.

    ``cache_bytes`` bounds the decoded cases each reader (every DataLoader worker) keeps in
    memory for random access; 0 reads slice by slice (docs/store.md).
    """

    path: str = "data/store.zarr"
    storage_options: dict[str, Any] = field(default_factory=dict)
    cache_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        if self.cache_bytes < 0:
            raise RecipeError(
                f"store.cache_bytes: must be >= 0 (0 turns the cache off), got {self.cache_bytes}"
            )


@dataclass
class SplitConfig:
    """Case-level split (never by slice): fractions of cases held out, and the seed."""

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0


@dataclass
class AugmentConfig:
    """Affine augmentation of training slices (albumentations), image and mask jointly."""

    enabled: bool = True
    p: float = 0.5
    rotate: float = 15.0
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    translate: float = 0.0625
    #: An albumentations serialised transform (``A.to_dict(...)``); replaces the affine above.
    transform: dict[str, Any] | None = None


@dataclass
class OptimizerConfig:
    """Adam (the seed's optimiser) and its learning-rate schedule.

    ``scheduler``: ``none``, ``cosine`` (per epoch down to ``min_lr`` at ``max_epochs``) or
    ``plateau`` (times ``plateau_factor`` after ``plateau_patience`` epochs without a better
    ``val_dice``).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "none"
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 3


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and loader settings."""

    max_epochs: int = 30
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | int = "32-true"
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    channels_last: bool = False
    compile: bool = False
    #: Stop after this many epochs without a better ``val_dice`` (``null``: never).
    early_stopping_patience: int | None = None
    #: Any of ``csv`` (``<output>/logs/metrics.csv``) and ``tensorboard``.
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    #: Also refresh ``last.ckpt`` every N optimiser steps (0: at the end of each epoch only).
    checkpoint_every_n_steps: int = 0


@dataclass
class EvaluateConfig:
    """Evaluation and prediction settings.

    ``tta`` averages the probabilities of each slice and its left-right mirror;
    ``postprocess`` lists postprocessor plugins applied to the thresholded mask in the
    scan's geometry. Both are off by default (see benchmarks/README.md for their effect).
    ``save_predictions`` makes ``lungseg evaluate`` write each case's mask as NIfTI.
    """

    threshold: float = 0.5
    batch_size: int = 16
    tta: bool = False
    postprocess: list[Component] = field(default_factory=list)
    save_predictions: bool = True


def _default_chain() -> list[Component]:
    return [
        Component("canonical"),
        Component("skip-slices", {"count": 30}),
        Component("normalize", {"divisor": 3071.0}),
        Component("resize", {"size": 256}),
    ]


@dataclass
class Recipe:
    """A whole run: data, preprocessing, training, evaluation."""

    name: str = "lungseg"
    data: DataConfig = field(default_factory=DataConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    output: str = "runs/lungseg"
    preprocess: list[Component] = field(default_factory=_default_chain)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampler: Component = field(default_factory=lambda: Component("tumor-weighted"))
    model: Component = field(default_factory=lambda: Component("unet"))
    loss: Component = field(default_factory=lambda: Component("bce"))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    metrics: list[Component] = field(default_factory=lambda: [Component("dice"), Component("iou")])
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    #: Where the recipe was read from (not part of the YAML).
    source_file: str = field(default="<recipe>", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain YAML-ready data."""
        return {
            f.name: _to_plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "source_file"
        }

    def preprocess_dict(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.preprocess]

    def preprocess_hash(self) -> str:
        """A short hash of the preprocessing chain; a store made with another chain differs."""
        text = json.dumps(self.preprocess_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_plugins(self, registry: Any) -> None:
        """Check every plugin name and parameter name against ``registry`` (fail early).

        Raises:
            RecipeError: naming the key path of the first bad entry.
        """
        entries = [("preprocessor", c, f"preprocess[{i}]") for i, c in enumerate(self.preprocess)]
        entries += [("metric", c, f"metrics[{i}]") for i, c in enumerate(self.metrics)]
        entries += [
            ("postprocessor", c, f"evaluate.postprocess[{i}]")
            for i, c in enumerate(self.evaluate.postprocess)
        ]
        entries += [
            ("sampler", self.sampler, "sampler"),
            ("model", self.model, "model"),
            ("loss", self.loss, "loss"),
        ]
        for kind, comp, key in entries:
            registry.check(kind, comp.name, comp.params, key)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the resolved recipe as YAML (``<output>/recipe.yaml``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _to_plain(value: Any) -> Any:
    if isinstance(value, Component):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- parsing


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe and apply ``KEY.PATH=VALUE`` overrides (values parsed as YAML).

    Raises:
        RecipeError: missing file, invalid YAML, unknown key, wrong type (names file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; pass the path of a YAML recipe")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    return recipe_from_dict(raw, overrides, source=str(path))


def recipe_from_dict(
    raw: Any, overrides: list[str] | tuple[str, ...] = (), source: str = "<recipe>"
) -> Recipe:
    """Build a :class:`Recipe` from plain data (for example a checkpoint's stored recipe)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of keys, got {type(raw).__name__}")
    raw = _merge(Recipe().to_dict(), json.loads(json.dumps(raw)))
    for item in overrides:
        _apply_override(raw, item, source)
    try:
        recipe = _build(Recipe, raw, "")
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    recipe.source_file = source
    return recipe


def _merge(default: Any, user: Any) -> Any:
    """User values over defaults; a component with another ``name`` replaces the default."""
    if not isinstance(default, dict) or not isinstance(user, dict):
        return user
    if "name" in default and user.get("name", default["name"]) != default["name"]:
        return user
    merged = dict(default)
    for key, value in user.items():
        merged[key] = _merge(default[key], value) if key in default else value
    return merged


def _apply_override(raw: dict, item: str, source: str) -> None:
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


def _build(cls: type, raw: Any, key: str) -> Any:
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
        return _build(tp, value, key)
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
