"""The torchvision models keep lungseg's model contract, offline, at the recipe's size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lungseg import testing
from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_lraspp.yaml"
MODELS = ["tv-lraspp-mobilenet", "tv-deeplabv3-mobilenet", "tv-fcn-resnet50"]


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Building a model must never fetch weights (there is no network)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download weights: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def _recipe_size() -> tuple[str, int]:
    recipe = yaml.safe_load(RECIPE.read_text())
    sizes = [step["size"] for step in recipe["preprocess"] if step["name"] == "resize"]
    return recipe["model"]["name"], sizes[-1]


@pytest.mark.parametrize("name", MODELS)
def test_model_contract_at_small_and_odd_sizes(name):
    testing.check_registered("model", name, size=32, odd_size=(17, 23), steps=1)


def test_the_recipe_model_works_at_the_recipe_size():
    name, size = _recipe_size()
    testing.check_registered("model", name, size=size, steps=1)


def test_three_channel_input_and_two_logits():
    model = load_registry().create("model", "tv-lraspp-mobilenet", {"in_channels": 3}, "model")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    model = load_registry().create("model", "tv-lraspp-mobilenet", {"out_channels": 2}, "model")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_the_first_convolution_takes_one_channel():
    model = load_registry().create("model", "tv-fcn-resnet50", {}, "model")
    assert model.net.backbone.conv1.in_channels == 1
    assert model.net.classifier[-1].out_channels == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"in_channels": 0}, r"`in_channels` must be a whole number >= 1, got 0"),
        ({"out_channels": 1.5}, r"`out_channels` must be a whole number >= 1, got 1.5"),
        ({"in_channels": True}, r"`in_channels` must be a whole number >= 1, got True"),
    ],
)
def test_bad_arguments_name_the_key(params, message):
    with pytest.raises(
        RecipeError, match=r"model: model 'tv-lraspp-mobilenet' rejected.*" + message
    ):
        load_registry().create("model", "tv-lraspp-mobilenet", params, "model")
