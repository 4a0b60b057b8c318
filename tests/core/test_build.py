"""lungseg.core.build: the composition root turns a recipe into parts, checked and resolved once.

The network's input channels follow ``data.context`` (2K+1).
"""

from __future__ import annotations

import pytest

from lungseg.core.build import Parts, assemble, model_channels, registry
from lungseg.core.errors import RecipeError
from lungseg.core.recipe import Component, Recipe, recipe_from_dict
from lungseg.core.registry import KINDS, Registry

SEED_CHAIN = [
    {"name": "canonical"},
    {"name": "skip-slices", "count": 30},
    {"name": "normalize", "divisor": 3071},
    {"name": "resize", "size": 256},
]


def test_the_default_chain_is_recorded_with_every_number_the_seed_spells_out():
    implicit = assemble(Recipe()).recipe
    explicit = assemble(recipe_from_dict({"preprocess": SEED_CHAIN})).recipe
    assert implicit.preprocess_hash() == explicit.preprocess_hash()
    recorded = implicit.preprocess_dict()
    assert recorded[1] == {"name": "skip-slices", "count": 30}
    assert recorded[2]["divisor"] == 3071.0 and recorded[3] == {"name": "resize", "size": 256}
    changed = recipe_from_dict({"preprocess": [*SEED_CHAIN[:3], {"name": "resize", "size": 128}]})
    assert assemble(changed).recipe.preprocess_hash() != implicit.preprocess_hash()


def test_assemble_checks_every_plugin_before_building_anything():
    with pytest.raises(RecipeError, match=r"loss\.name: unknown loss 'bcee'; did you mean 'bce'"):
        assemble(recipe_from_dict({"loss": {"name": "bcee"}}))
    with pytest.raises(RecipeError, match=r"preprocess\[3\]\.sise"):
        assemble(recipe_from_dict({"preprocess": [*SEED_CHAIN[:3], {"name": "resize", "sise": 3}]}))


def test_parts_build_each_component_from_the_one_registry():
    recipe = recipe_from_dict({"model": {"name": "unet", "features": [4, 8]}})
    parts = assemble(recipe)
    assert assemble(parts) is parts and parts.plugins is registry()
    assert parts.chain is parts.chain  # built once
    assert [name for name, _ in parts.chain.steps][1:] == ["skip-slices", "normalize", "resize"]
    first, second = parts.model(), parts.model()
    assert first is not second  # a new network each time
    assert sum(p.numel() for p in first.parameters()) == sum(p.numel() for p in second.parameters())
    module = parts.module()
    assert type(module.model) is type(first) and module.recipe is parts.recipe
    assert list(parts.metrics())[:2] == ["dice", "iou"]
    assert parts.postprocessors() == []
    assert len(parts.postprocessors([Component("min-size")])) == 1
    assert isinstance(parts, Parts)


def _first_conv(model):
    import torch

    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def _with_model(name: str, factory) -> Registry:
    """Every installed plugin, plus one model factory (a registry of its own)."""
    plugins = Registry()
    for kind in KINDS:
        for entry in registry().entries(kind):
            plugins.add(kind, entry.name, entry.factory, entry.plugin, entry.description)
    plugins.add("model", name, factory, "tests")
    return plugins


@pytest.mark.parametrize("context", [0, 1, 3])
def test_the_model_takes_one_channel_per_context_slice(context):
    recipe = recipe_from_dict(
        {"data": {"context": context}, "model": {"name": "unet", "features": [4, 8]}}
    )
    parts = assemble(recipe)
    assert model_channels(parts.recipe, parts.plugins) == {"in_channels": 2 * context + 1}
    assert _first_conv(parts.model()).in_channels == 2 * context + 1
    assert _first_conv(parts.module().model).in_channels == 2 * context + 1
    same = {"name": "unet", "features": [4, 8], "in_channels": 2 * context + 1}
    spelled = assemble(recipe_from_dict({"data": {"context": context}, "model": same}))
    assert _first_conv(spelled.model()).in_channels == 2 * context + 1


def test_a_conflicting_in_channels_is_refused_when_assembled():
    for context, channels in ((1, 1), (0, 3), (2, 3)):
        model = {"name": "unet", "features": [4, 8], "in_channels": channels}
        with pytest.raises(RecipeError, match=r"model\.in_channels: .*data\.context: ") as err:
            assemble(recipe_from_dict({"data": {"context": context}, "model": model}))
        assert f"{2 * context + 1} channels" in str(err.value)


def test_a_model_without_in_channels_takes_no_context():
    def fixed(width: int = 4):
        import torch

        return torch.nn.Conv2d(1, 1, 3, padding=1)

    plugins = _with_model("fixed", fixed)
    plain = assemble(recipe_from_dict({"model": {"name": "fixed"}}), plugins)
    assert model_channels(plain.recipe, plugins) == {}  # K = 0: called as ever
    assert _first_conv(plain.model()).in_channels == 1
    with pytest.raises(RecipeError, match=r"data\.context: 1 .*'fixed' has no in_channels"):
        assemble(recipe_from_dict({"data": {"context": 1}, "model": {"name": "fixed"}}), plugins)

    def open_ended(**kwargs):
        return kwargs

    plugins = _with_model("open", open_ended)
    recipe = recipe_from_dict({"data": {"context": 2}, "model": {"name": "open"}})
    assert assemble(recipe, plugins).model() == {"in_channels": 5}
    assert assemble(recipe_from_dict({"model": {"name": "open"}}), plugins).model() == {}
