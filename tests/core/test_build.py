"""lungseg.core.build: the composition root turns a recipe into parts, checked and resolved once."""

from __future__ import annotations

import pytest

from lungseg.core.build import Parts, assemble, registry
from lungseg.core.errors import RecipeError
from lungseg.core.recipe import Component, Recipe, recipe_from_dict

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
