from __future__ import annotations

import pytest
import yaml

from lungseg.errors import RecipeError
from lungseg.recipe import Recipe, load_recipe, recipe_from_dict


def test_defaults_are_the_seed_chain():
    recipe = Recipe()
    assert [c.name for c in recipe.preprocess] == [
        "canonical",
        "skip-slices",
        "normalize",
        "resize",
    ]
    assert recipe.preprocess[1].params == {"count": 30}
    assert recipe.preprocess[2].params == {"divisor": 3071.0}
    assert recipe.preprocess[3].params == {"size": 256}


def test_overrides_are_parsed_as_yaml_and_merge(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "unet", "features": [8, 16]}}))
    recipe = load_recipe(
        path, ["trainer.max_epochs=3", "model.batch_norm=false", "preprocess.1.count=12"]
    )
    assert recipe.trainer.max_epochs == 3
    assert recipe.model.params == {"features": [8, 16], "batch_norm": False}
    assert recipe.preprocess[1].params["count"] == 12
    assert recipe.trainer.batch_size == 8  # untouched default


def test_round_trip_through_yaml(tmp_path):
    recipe = recipe_from_dict({"name": "x", "trainer": {"devices": [0, 1]}})
    saved = recipe.save(tmp_path / "out" / "recipe.yaml")
    again = load_recipe(saved)
    assert again.to_dict() == recipe.to_dict()
    assert again.preprocess_hash() == recipe.preprocess_hash()


def test_preprocess_hash_changes_with_the_chain():
    a = recipe_from_dict({})
    b = recipe_from_dict({}, ["preprocess.3.size=128"])
    assert a.preprocess_hash() != b.preprocess_hash()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"trainr": {}}, r"r\.yaml: trainr: unknown key; did you mean 'trainer'"),
        ({"trainer": {"max_epochs": "ten"}}, r"trainer\.max_epochs: expected int, got 'ten'"),
        (
            {"trainer": {"max_epoch": 1}},
            r"trainer\.max_epoch: unknown key; did you mean 'max_epochs'",
        ),
        ({"split": {"val_fraction": True}}, r"split\.val_fraction: expected float"),
        ({"preprocess": [{"size": 3}]}, r"preprocess\[0\]: expected \{name: PLUGIN"),
        ({"data": "folder"}, r"data: expected a mapping"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, raw, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: not valid YAML"):
        load_recipe(bad)


def test_bad_override_syntax(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("{}")
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        load_recipe(path, ["trainer.max_epochs"])
    with pytest.raises(RecipeError, match=r"index must be 0\.\.3"):
        load_recipe(path, ["preprocess.9.size=3"])
