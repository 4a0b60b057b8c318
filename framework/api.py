"""The public API for plugin authors: everything a plugin may use from lungseg.

A plugin, lungseg's default ones included, imports from lungseg only ``lungseg`` (the
markers and errors) and this module; the rest of the package is internal and may change.
:func:`lungseg.testing.check_plugin_module` checks it. The contract these names serve is
in :mod:`lungseg.core.hookspecs`.

``from lungseg import api`` costs nothing: every name below except the markers and errors
is imported on first use (a module-level ``__getattr__``), so a plugin that needs torch for
the sampler helpers, or SciPy for the metric helpers, pays for them when a recipe builds its
component, not when lungseg registers it.

Names:
    Markers and errors: :data:`hookimpl`, :class:`LungsegError`, :class:`DataError`,
        :class:`RecipeError`, :class:`PluginError`; :class:`KindRegistry` (what a hook gets).
    Preprocessing: :class:`Volume`, :class:`Step` (the protocol a step keeps),
        :data:`CROP_KEYS`, :func:`crop_slices`, :func:`uncrop_slices`, :func:`is_crop`, and the
        lung finder :func:`air_inside_body`.
    Metrics: :class:`Metric`, :func:`overlap`, :func:`dice_from_counts`,
        :func:`components` (26-connected, :data:`FULL_CONNECTIVITY`),
        :func:`surface_distances`.
    Samplers (import torch): :class:`DistributedWeightedSampler`,
        :func:`class_balanced_weights`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lungseg.core.errors import DataError, LungsegError, PluginError, RecipeError
from lungseg.core.markers import hookimpl

if TYPE_CHECKING:
    from lungseg.core.registry import KindRegistry
    from lungseg.data.volume import Volume
    from lungseg.inference.metrics import (
        FULL_CONNECTIVITY,
        Metric,
        components,
        dice_from_counts,
        overlap,
        surface_distances,
    )
    from lungseg.preprocess.chain import (
        CROP_KEYS,
        Step,
        air_inside_body,
        crop_slices,
        is_crop,
        uncrop_slices,
    )
    from lungseg.training.sampling import DistributedWeightedSampler, class_balanced_weights

#: Names imported on first use, and the internal module each comes from.
_LAZY = {
    "KindRegistry": "lungseg.core.registry",
    "Volume": "lungseg.data.volume",
    "Step": "lungseg.preprocess.chain",
    "CROP_KEYS": "lungseg.preprocess.chain",
    "crop_slices": "lungseg.preprocess.chain",
    "uncrop_slices": "lungseg.preprocess.chain",
    "is_crop": "lungseg.preprocess.chain",
    "air_inside_body": "lungseg.preprocess.chain",
    "Metric": "lungseg.inference.metrics",
    "overlap": "lungseg.inference.metrics",
    "dice_from_counts": "lungseg.inference.metrics",
    "components": "lungseg.inference.metrics",
    "surface_distances": "lungseg.inference.metrics",
    "FULL_CONNECTIVITY": "lungseg.inference.metrics",
    "DistributedWeightedSampler": "lungseg.training.sampling",
    "class_balanced_weights": "lungseg.training.sampling",
}

__all__ = [
    "CROP_KEYS",
    "FULL_CONNECTIVITY",
    "DataError",
    "DistributedWeightedSampler",
    "KindRegistry",
    "LungsegError",
    "Metric",
    "PluginError",
    "RecipeError",
    "Step",
    "Volume",
    "air_inside_body",
    "class_balanced_weights",
    "components",
    "crop_slices",
    "dice_from_counts",
    "hookimpl",
    "is_crop",
    "overlap",
    "surface_distances",
    "uncrop_slices",
]


def __getattr__(name: str) -> Any:
    """Import a lazy name's module on first use and cache the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lungseg.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
