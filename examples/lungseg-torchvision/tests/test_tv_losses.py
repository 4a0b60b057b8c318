"""The focal and Dice+BCE losses keep lungseg's loss contract and validate their arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lungseg import testing
from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry


def _loss(name: str, **params):
    return load_registry().create("loss", name, params, "loss")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("focal", {}),
        ("focal", {"alpha": None, "gamma": 0.0}),
        ("focal", {"alpha": 0.75, "gamma": 1}),
        ("dice-bce", {}),
        ("dice-bce", {"bce_weight": 0.0}),
        ("dice-bce", {"dice_weight": 0.0, "smooth": 0.5}),
    ],
)
def test_loss_contract(name, params):
    testing.check_registered("loss", name, params)


def _batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=gen)
    target = (torch.rand(2, 1, 8, 8, generator=gen) > 0.7).float()
    return logits, target


def test_focal_without_weighting_or_focusing_is_bce():
    logits, target = _batch()
    expected = nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(_loss("focal", alpha=None, gamma=0.0)(logits, target), expected)


def test_focal_down_weights_easy_pixels():
    logits, target = _batch()
    assert _loss("focal", alpha=None, gamma=2.0)(logits, target) < _loss(
        "focal", alpha=None, gamma=0.0
    )(logits, target)


def test_dice_bce_is_the_weighted_sum_of_its_terms():
    logits, target = _batch()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    got = _loss("dice-bce", dice_weight=2.0, bce_weight=0.5)(logits, target)
    assert torch.allclose(got, 0.5 * bce + 2.0 * (1 - dice))


def test_dice_bce_of_an_empty_target_and_prediction_is_near_zero():
    target = torch.zeros(1, 1, 8, 8)
    assert float(_loss("dice-bce")(torch.full_like(target, -20.0), target)) < 1e-6


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("focal", {"alpha": 1.5}, r"`alpha` must lie in \[0.0, 1.0\], got 1.5"),
        ("focal", {"gamma": -1}, r"`gamma` must lie in \[0.0, inf\], got -1"),
        ("focal", {"gamma": "2"}, r"`gamma` must be a number, got '2'"),
        ("dice-bce", {"dice_weight": 0, "bce_weight": 0}, "both 0"),
        ("dice-bce", {"smooth": 0}, r"`smooth` must be > 0"),
    ],
)
def test_bad_arguments_name_the_key(name, params, message):
    with pytest.raises(RecipeError, match=rf"loss: loss '{name}' rejected.*{message}"):
        _loss(name, **params)
