"""The Tversky loss keeps lungseg's loss contract, is computed as documented, and checks its
arguments; it is the example's own (lungseg's core provides bce, dice, dice-bce, focal)."""

from __future__ import annotations

import math

import pytest
import torch

from lungseg import testing
from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry

LN3 = math.log(3.0)


def _loss(name: str, **params):
    return load_registry().create("loss", name, params, "loss")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"alpha": 0.5, "beta": 0.5},
        {"alpha": 0.0, "beta": 1.0, "gamma": 0.75},
        {"gamma": 2.0, "smooth": 1e-5},
    ],
)
def test_loss_contract(params):
    testing.check_registered("loss", "tversky", params)


def _batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=gen)
    target = (torch.rand(2, 1, 8, 8, generator=gen) > 0.7).float()
    return logits, target


def test_the_tversky_index_by_hand():
    # probabilities [[0.5, 0.5], [0.75, 0.25]] against [[1, 0], [1, 0]]: TP 1.25, FP 0.75, FN 0.75
    logits = torch.tensor([[[[0.0, 0.0], [LN3, -LN3]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    index = (1.25 + 1) / (1.25 + 0.3 * 0.75 + 0.7 * 0.75 + 1)
    assert float(_loss("tversky")(logits, target)) == pytest.approx(1 - index, rel=1e-6)
    squared = _loss("tversky", gamma=2.0)(logits, target)
    assert float(squared) == pytest.approx((1 - index) ** 2, rel=1e-6)


def test_equal_weights_give_lungseg_s_dice_loss():
    logits, target = _batch()
    dice = _loss("dice", smooth=2.0)(logits, target)  # TI doubles num. and den. at 0.5, 0.5
    assert torch.allclose(_loss("tversky", alpha=0.5, beta=0.5)(logits, target), dice)


def test_missed_tumour_costs_more_than_as_many_false_alarms():
    big = torch.zeros(1, 1, 8, 8)
    big[..., 2:6, 2:6] = 1
    small = big.clone()
    small[..., 5, 2:6] = 0  # 4 pixels fewer
    logit = lambda mask: 30.0 * (2 * mask - 1)  # noqa: E731
    missed = _loss("tversky")(logit(small), big)  # 4 false negatives
    alarms = _loss("tversky")(logit(big), small)  # 4 false positives
    assert float(missed) == pytest.approx(1 - 13 / (12 + 0.7 * 4 + 1), rel=1e-5)
    assert float(alarms) == pytest.approx(1 - 13 / (12 + 0.3 * 4 + 1), rel=1e-5)
    dice = _loss("tversky", alpha=0.5, beta=0.5)
    assert float(dice(logit(small), big)) == pytest.approx(float(dice(logit(big), small)))


def test_small_gamma_keeps_a_finite_gradient_at_a_perfect_prediction():
    _, target = _batch()
    logits = (50.0 * (2 * target - 1)).requires_grad_(True)
    value = _loss("tversky", gamma=0.5)(logits, target)
    value.backward()
    assert float(value.detach()) < 1e-3 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -0.1}, r"`alpha` must lie in \[0.0, inf\], got -0.1"),
        ({"alpha": 0, "beta": 0}, "both 0"),
        ({"gamma": 0}, "`gamma` and `smooth` must be > 0"),
        ({"smooth": "1"}, r"`smooth` must be a number, got '1'"),
    ],
)
def test_bad_arguments_name_the_key(params, message):
    with pytest.raises(RecipeError, match=rf"loss: loss 'tversky' rejected.*{message}"):
        _loss("tversky", **params)
