from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry
from lungseg.core.recipe import (
    Recipe,
    StoreConfig,
    SyntheticConfig,
    TrainerConfig,
    load_recipe,
    recipe_from_dict,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SEED_CHAIN = [
    {"name": "canonical"},
    {"name": "skip-slices", "count": 30},
    {"name": "normalize", "divisor": 3071},
    {"name": "resize", "size": 256},
]


def test_defaults_are_the_seed_chain_by_the_plugins_own_defaults():
    recipe = Recipe()
    assert recipe.preprocess_dict() == [{"name": c["name"]} for c in SEED_CHAIN]
    registry = load_registry()
    for step in SEED_CHAIN[1:]:
        (param, value), *_ = [(k, v) for k, v in step.items() if k != "name"]
        entry = registry.get("preprocessor", step["name"])
        assert entry.parameters()[param].default == value


def test_the_shipped_recipes_load_and_msd_task06_spells_out_the_seed_chain():
    msd = load_recipe(RECIPES / "msd_task06.yaml")
    assert msd.preprocess_dict() == SEED_CHAIN
    assert (msd.trainer.max_epochs, msd.trainer.batch_size, msd.optimizer.lr) == (30, 8, 1e-4)
    quick = load_recipe(RECIPES / "quickstart.yaml")
    assert quick.data.source == "synthetic" and quick.trainer.precision == "32-true"


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
    _refused(tmp_path, raw, message)


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


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"trainer": {"precision": "fp8"}},
            r"r\.yaml: trainer\.precision: 'fp8' is not one of '32-true', '16-mixed', .*'64-true'",
        ),
        (
            {"trainer": {"precision": "bf16"}},
            r"trainer\.precision: 'bf16' is not one of .*; did you mean 'bf16-true'\?$",
        ),
        ({"trainer": {"precision": True}}, r"trainer\.precision: True is not one of"),
        ({"trainer": {"precision": 16}}, r"trainer\.precision: 16 is not one of"),
        (
            {"trainer": {"loggers": ["csv", "neptune"]}},
            r"trainer\.loggers\[1\]: 'neptune' is not one of 'csv', 'tensorboard', 'mlflow', "
            r"'wandb'$",
        ),
        (
            {"trainer": {"wandb": {"mode": "onlin"}}},
            r"trainer\.wandb\.mode: 'onlin' is not a valid one of 'online', 'offline', "
            r"'disabled' or null$",
        ),
        (
            {"optimizer": {"scheduler": "cosin"}},
            r"optimizer\.scheduler: 'cosin' is not one of 'none', 'cosine', 'plateau'; "
            r"did you mean 'cosine'\?",
        ),
        (
            {"data": {"source": "ftp"}},
            r"data\.source: 'ftp' is not one of 'synthetic', 'folder', 'msd', 'kaggle'$",
        ),
    ],
)
def test_fixed_choices_name_the_key_value_choices_and_closest(tmp_path, raw, message):
    _refused(tmp_path, raw, message)


def _refused(tmp_path, raw: dict, message: str) -> None:
    """Loading ``raw`` from a file is one RecipeError matching ``message``."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_precision_32_may_be_written_as_a_number_or_a_string(tmp_path):
    assert recipe_from_dict({"trainer": {"precision": 32}}).trainer.precision == 32
    assert recipe_from_dict({}, ["trainer.precision='32'"]).trainer.precision == "32"
    assert recipe_from_dict({}, ["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"trainer": {"max_epochs": 0}}, r"trainer\.max_epochs: must be >= 1, got 0$"),
        ({"trainer": {"accumulate_grad_batches": 0}}, r"trainer\.accumulate_grad_batches: must"),
        ({"trainer": {"batch_size": -2}}, r"trainer\.batch_size: must be >= 1, got -2"),
        ({"trainer": {"num_workers": -1}}, r"trainer\.num_workers: must be >= 0"),
        (
            {"trainer": {"checkpoint_every_n_steps": -1}},
            r"trainer\.checkpoint_every_n_steps: .*0: off",
        ),
        ({"trainer": {"gradient_clip_val": 0}}, r"trainer\.gradient_clip_val: must be > 0 or null"),
        (
            {"trainer": {"early_stopping_patience": 0}},
            r"trainer\.early_stopping_patience: must be >= 1",
        ),
        ({"optimizer": {"lr": 0}}, r"optimizer\.lr: must be > 0, got 0\.0"),
        ({"optimizer": {"plateau_factor": 1}}, r"optimizer\.plateau_factor: must be between"),
        ({"split": {"val_fraction": 1.0}}, r"split\.val_fraction: must be in \[0, 1\)"),
        ({"split": {"val_fraction": 0.5, "test_fraction": 0.5}}, r"split\.val_fraction: .*train"),
        ({"augment": {"p": 1.5}}, r"augment\.p: must be in \[0, 1\], got 1\.5"),
        ({"data": {"synthetic": {"cases": 0}}}, r"data\.synthetic\.cases: must be >= 1, got 0"),
        (
            {"data": {"synthetic": {"slices": 20, "abdomen_slices": 16}}},
            r"data\.synthetic\.slices: must be >= abdomen_slices \+ 5 = 21, got 20",
        ),
        ({"data": {"source": "kaggle"}}, r"data\.dataset: must be OWNER/DATASET when source"),
        ({"store": {"cache_bytes": -1}}, r"store\.cache_bytes: must be >= 0 \(0 turns the cache"),
        ({"evaluate": {"threshold": 1}}, r"evaluate\.threshold: must be between 0 and 1"),
        ({"evaluate": {"batch_size": 0}}, r"evaluate\.batch_size: must be >= 1, got 0"),
        ({"trainer": {"mlflow": {"experiment": " "}}}, r"trainer\.mlflow\.experiment: must be a"),
        ({"trainer": {"wandb": {"project": ""}}}, r"trainer\.wandb\.project: must be a non-empty"),
    ],
)
def test_value_ranges_name_the_file_and_key(raw, message):
    with pytest.raises(RecipeError, match=rf"^r\.yaml: {message}"):
        recipe_from_dict(raw, source="r.yaml")


def test_sections_built_in_python_are_checked_too():
    with pytest.raises(RecipeError, match=r"^max_epochs: must be >= 1, got 0$"):
        TrainerConfig(max_epochs=0)
    with pytest.raises(ValueError, match=r"^cache_bytes: must be >= 0"):
        StoreConfig(cache_bytes=-1)
    with pytest.raises(RecipeError, match=r"^test_cases: must be >= 0"):
        SyntheticConfig(test_cases=-1)
    assert SyntheticConfig().test_cases >= 1  # `lungseg run` predicts on imagesTs/


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_assembles(path):
    from lungseg.core.build import assemble

    parts = assemble(load_recipe(path))  # every plugin name and parameter exists
    assert parts.recipe.source_file == str(path) and parts.chain.steps


def test_tracker_sections_are_checked_and_default_to_the_environment(tmp_path):
    _refused(
        tmp_path,
        {"trainer": {"mlflow": {"tracking_url": "http://mlflow:5000"}}},
        r"trainer\.mlflow\.tracking_url: unknown key; did you mean 'tracking_uri'\?",
    )
    _refused(tmp_path, {"trainer": {"mlflow": "http://x"}}, r"trainer\.mlflow: expected a mapping")
    recipe = recipe_from_dict({}, ["trainer.loggers=[csv, mlflow]", "trainer.wandb.mode=offline"])
    assert recipe.trainer.loggers == ["csv", "mlflow"]
    assert recipe.trainer.wandb.mode == "offline" and recipe.trainer.wandb.project is None
    assert recipe.trainer.mlflow.tracking_uri is None  # MLFLOW_TRACKING_URI, else the run folder
