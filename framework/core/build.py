"""The composition root: a checked recipe becomes the parts every stage works with.

:func:`assemble` loads the plugin registry (once per process), checks every plugin name and
parameter of the recipe against it, and returns :class:`Parts`, which builds the
preprocessing chain, the network, the loss, the sampler, the metrics and the
post-processors on request. Stages (preprocess, train, evaluate, predict) receive parts;
they never load the registry or rebuild the chain themselves.

Building is lazy: a component's heavy dependencies (torch for a network) are imported only
when a stage asks for that component, so ``lungseg preprocess`` never imports torch.

The network's input channels follow the data: ``data.context: K`` stacks 2K+1 slices, so the
model factory gets ``in_channels=2K+1`` (checked when the recipe is assembled).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lungseg.core.errors import RecipeError
from lungseg.core.recipe import Component, Recipe

if TYPE_CHECKING:
    from lungseg.core.registry import Registry
    from lungseg.preprocess.chain import Chain

__all__ = ["Parts", "assemble", "model_channels", "registry"]

_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The registry of every installed plugin, loaded once per process."""
    global _REGISTRY
    if _REGISTRY is None:
        from lungseg.core.manager import load_registry

        _REGISTRY = load_registry()
    return _REGISTRY


@dataclass
class Parts:
    """What a recipe is made of, built from the registry's plugins on request.

    Attributes:
        recipe: the checked recipe.
        plugins: the registry the parts come from.
    """

    recipe: Recipe
    plugins: Registry = field(repr=False)

    @cached_property
    def chain(self) -> Chain:
        """The preprocessing chain (``preprocess``), built once."""
        from lungseg.preprocess.chain import Chain

        return Chain.from_components(self.recipe.preprocess, self.plugins)

    def model(self) -> Any:
        """A new network (``model``): a ``torch.nn.Module`` mapping images to logits.

        Its ``in_channels`` is ``2 * data.context + 1`` (see :func:`model_channels`).
        """
        m = self.recipe.model
        supplied = model_channels(self.recipe, self.plugins)
        return self.plugins.create("model", m.name, m.params, "model", **supplied)

    def loss(self) -> Any:
        """A new loss (``loss``): ``loss(logits, target) -> scalar tensor``."""
        c = self.recipe.loss
        return self.plugins.create("loss", c.name, c.params, "loss")

    def sampler(self) -> Any:
        """The sampler factory (``sampler``).

        Returns:
            ``build(slice_labels, *, num_replicas, rank, seed) -> Sampler``.
        """
        c = self.recipe.sampler
        return self.plugins.create("sampler", c.name, c.params, "sampler")

    def module(self) -> Any:
        """A new :class:`~lungseg.training.module.SegmentationModule` (new network and loss)."""
        from lungseg.training.module import SegmentationModule

        return SegmentationModule(self.model(), self.loss(), self.recipe)

    def metrics(self) -> dict[str, Any]:
        """The metric plugins of ``metrics``, by name, in recipe order."""
        return {
            c.name: self.plugins.create("metric", c.name, c.params, f"metrics[{i}]")
            for i, c in enumerate(self.recipe.metrics)
        }

    def postprocessors(self, components: list[Component] | None = None) -> list[Any]:
        """Post-processors: ``components``, or the recipe's ``evaluate.postprocess``."""
        chosen = self.recipe.evaluate.postprocess if components is None else components
        return [
            self.plugins.create("postprocessor", c.name, c.params, f"evaluate.postprocess[{i}]")
            for i, c in enumerate(chosen)
        ]


def assemble(recipe: Recipe | Parts, plugins: Registry | None = None) -> Parts:
    """The parts of ``recipe``, its plugin names and parameters checked first.

    Args:
        recipe: a recipe, or parts already assembled (returned as they are).
        plugins: the registry to build from (default: every installed plugin, loaded once).

    Returns:
        The recipe's :class:`Parts`.

    Raises:
        RecipeError: an unknown plugin name or parameter (naming the recipe key), or a model
            whose input channels cannot follow ``data.context`` (:func:`model_channels`).
    """
    if isinstance(recipe, Parts):
        return recipe
    plugins = plugins if plugins is not None else registry()
    recipe.check_plugins(plugins)
    model_channels(recipe, plugins)
    return Parts(_resolved(recipe, plugins), plugins)


def model_channels(recipe: Recipe, plugins: Registry) -> dict[str, int]:
    """What lungseg passes the model factory itself: ``{"in_channels": 2K + 1}`` or nothing.

    ``data.context: K`` feeds 2K+1 slices as channels. A factory with an ``in_channels``
    parameter gets it, unless the recipe sets ``model.in_channels`` itself to that very
    number. A factory without an ``in_channels`` parameter is left alone for K = 0 (one
    channel, as ever); one that takes only ``**kwargs`` gets ``in_channels`` for K > 0.

    Raises:
        RecipeError: ``model.in_channels`` is set to another number, or K > 0 and the
            factory takes no ``in_channels``.
    """
    context = recipe.data.context
    channels = 2 * context + 1
    m = recipe.model
    if "in_channels" in m.params:
        if m.params["in_channels"] != channels:
            raise RecipeError(
                f"model.in_channels: {m.params['in_channels']!r} conflicts with "
                f"data.context: {context} (the data has 2 * {context} + 1 = {channels} "
                f"channels); drop model.in_channels, it follows from data.context"
            )
        return {}
    entry = plugins.get("model", m.name, "model.name")
    takes_any = any(
        p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values()
    )
    if "in_channels" in entry.parameters() or (takes_any and context > 0):
        return {"in_channels": channels}
    if context > 0:
        raise RecipeError(
            f"data.context: {context} needs {channels} input channels, but the model "
            f"{m.name!r} has no in_channels parameter (model.in_channels); use a model that "
            "takes in_channels, or set data.context: 0"
        )
    return {}


def _resolved(recipe: Recipe, plugins: Registry) -> Recipe:
    """``recipe`` with each preprocessing step's parameters written out, defaults included.

    The chain a store, a checkpoint and ``recipe.yaml`` record (and its hash) then names every
    number it ran with, whether the recipe spelled it out (``{name: resize, size: 256}``) or
    left it to the plugin (``{name: resize}``).
    """
    chain = []
    for comp in recipe.preprocess:
        entry = plugins.get("preprocessor", comp.name)
        defaults = {
            name: p.default for name, p in entry.parameters().items() if p.default is not p.empty
        }
        params = {**_json_ready(defaults), **comp.params}
        for key, value in comp.params.items():  # 3071 written for a float default is 3071.0
            if isinstance(defaults.get(key), float) and type(value) is int:
                params[key] = float(value)
        chain.append(Component(comp.name, params))
    return dataclasses.replace(recipe, preprocess=chain)


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    """The values that survive JSON (tuples become lists); others are left out."""
    ready = {}
    for key, value in values.items():
        try:
            ready[key] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return ready
