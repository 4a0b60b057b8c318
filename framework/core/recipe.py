"""YAML recipes as typed objects: load, override with ``--set``, validate, save.

Every key is checked: an unknown key, a wrong type or a bad value is a :class:`RecipeError`
naming the recipe file and the key path (``trainer.max_epochs``). The sections are in
:mod:`lungseg.core.recipe_sections`, the checking in :mod:`lungseg.core.recipe_schema`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lungseg.core.errors import RecipeError
from lungseg.core.recipe_schema import Component, apply_override, build, merge, to_plain
from lungseg.core.recipe_sections import (
    AugmentConfig,
    DataConfig,
    EvaluateConfig,
    OptimizerConfig,
    SplitConfig,
    StoreConfig,
    SyntheticConfig,
    TrainerConfig,
)

__all__ = [
    "MONITOR",
    "AugmentConfig",
    "Component",
    "DataConfig",
    "EvaluateConfig",
    "OptimizerConfig",
    "Recipe",
    "RecipeError",
    "SplitConfig",
    "StoreConfig",
    "SyntheticConfig",
    "TrainerConfig",
    "load_recipe",
    "recipe_from_dict",
    "without_secrets",
]

MONITOR = "val_dice"
"""The validation score training logs, checkpoints on (best = highest) and schedules by."""


def _default_chain() -> list[Component]:
    """The seed's chain; each plugin's own defaults are the seed's numbers (30, 3071, 256)."""
    names = ("canonical", "skip-slices", "normalize", "resize")
    return [Component(name) for name in names]


def _default_metrics() -> list[Component]:
    """Every evaluation's default report: overlap, distance, volume and lesion metrics."""
    names = ("dice", "iou", "precision", "recall", "hd95", "nsd", "volume-diff")
    return [Component(n) for n in (*names, "lesion-recall", "fp-lesions")]


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
    metrics: list[Component] = field(default_factory=_default_metrics)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    #: Where the recipe was read from (not part of the YAML).
    source_file: str = field(default="<recipe>", compare=False, repr=False)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """The recipe as plain YAML-ready data.

        Args:
            secrets: keep credentials in ``store.storage_options``. Off by default, so what
                is saved (``recipe.yaml``, checkpoints, ``metrics.json``, logs) never holds
                them; see :func:`without_secrets`.
        """
        plain = {
            f.name: to_plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "source_file"
        }
        if not secrets:
            plain["store"]["storage_options"] = without_secrets(plain["store"]["storage_options"])
        return plain

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


_SECRET_WORDS = re.compile(r"key|secret|token|password|passwd|credential|auth|session|sas", re.I)


def without_secrets(options: Any) -> Any:
    """``storage_options`` with every credential-like entry removed, at any depth.

    A key counts as a credential when its name contains key, secret, token, password,
    credential, auth, session or sas (``key``, ``secret``, ``aws_secret_access_key``,
    ``token``, ``client_kwargs.aws_session_token``...). Give credentials through the
    environment or a profile instead (docs/store.md); a recipe that holds them still works in
    memory, but they are never written to disk.
    """
    if isinstance(options, dict):
        return {
            k: without_secrets(v)
            for k, v in options.items()
            if not (isinstance(k, str) and _SECRET_WORDS.search(k))
        }
    if isinstance(options, list):
        return [without_secrets(v) for v in options]
    return options


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
    raw = merge(Recipe().to_dict(secrets=True), json.loads(json.dumps(raw)))
    for item in overrides:
        apply_override(raw, item, source)
    try:
        recipe = build(Recipe, raw, "")
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    recipe.source_file = source
    return recipe
