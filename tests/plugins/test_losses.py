"""The default losses: values by hand on tiny tensors, gradients, batch pooling, arguments."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from lungseg import testing
from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry

LN3 = math.log(3.0)


def _loss(name: str, **params) -> nn.Module:
    return load_registry().create("loss", name, params, "loss")


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities [[0.5, 0.5], [0.75, 0.25]] against the target [[1, 0], [1, 0]]."""
    logits = torch.tensor([[[[0.0, 0.0], [LN3, -LN3]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    return logits, target


def _random(seed: int = 0, shape=(3, 1, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), (torch.rand(shape, generator=gen) > 0.7).float()


# By hand on the tiny case: sum(p t) = 1.25, sum(p) = 2, sum(t) = 2, and the per-pixel
# cross-entropies are ln 2, ln 2, ln(4/3), ln(4/3).
BCE = (math.log(2) + math.log(4 / 3)) / 2
DICE = 1 - (2 * 1.25 + 1) / (2 + 2 + 1)  # 0.3


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("dice", {}, DICE),
        ("dice", {"smooth": 0.5}, 1 - (2 * 1.25 + 0.5) / (4 + 0.5)),
        ("dice-bce", {}, BCE + DICE),
        ("dice-bce", {"dice_weight": 2.0, "bce_weight": 0.5}, 0.5 * BCE + 2.0 * DICE),
        ("dice-bce", {"bce_weight": 0.0}, DICE),
        ("dice-bce", {"dice_weight": 0.0}, BCE),
        # (1 - p_t)^2 is 1/4 on the two p = 0.5 pixels and 1/16 on the others
        ("focal", {"alpha": None}, (0.5 * math.log(2) + 0.125 * math.log(4 / 3)) / 4),
        # alpha 0.25 on the tumour pixels (the first column), 0.75 on background
        ("focal", {}, (0.25 * math.log(2) + 0.0625 * math.log(4 / 3)) / 4),
        ("focal", {"alpha": None, "gamma": 0.0}, BCE),
    ],
)
def test_values_by_hand(name, params, expected):
    assert float(_loss(name, **params)(*_tiny())) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dice", {}),
        ("dice", {"smooth": 1e-5}),
        ("dice-bce", {}),
        ("dice-bce", {"bce_weight": 0.0}),
        ("dice-bce", {"dice_weight": 0.0, "smooth": 0.5}),
        ("focal", {}),
        ("focal", {"alpha": None, "gamma": 0.0}),
        ("focal", {"alpha": 0.75, "gamma": 0.5}),
    ],
)
def test_loss_contract(name, params):
    testing.check_registered("loss", name, params)


@pytest.mark.parametrize("name", ["dice", "dice-bce", "focal"])
def test_gradients_flow_and_stay_finite_for_saturated_logits(name):
    logits, target = _random()
    for scale in (1.0, 100.0):  # 100: sigmoid is exactly 0 or 1 in float32
        x = (scale * logits).requires_grad_(True)
        value = _loss(name, gamma=0.5)(x, target) if name == "focal" else _loss(name)(x, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(x.grad).all()
        if scale == 1.0:
            assert x.grad.abs().sum() > 0


def test_a_perfect_prediction_gives_no_dice_loss():
    _, target = _random()
    perfect = 30.0 * (2 * target - 1)
    assert float(_loss("dice")(perfect, target)) < 1e-6
    assert float(_loss("dice-bce")(perfect, target)) < 1e-6
    empty = torch.zeros(2, 1, 8, 8)
    assert float(_loss("dice")(torch.full_like(empty, -30.0), empty)) < 1e-6


def test_dice_is_pooled_over_the_batch():
    logits, target = _random(shape=(1, 1, 8, 8))
    empty = torch.zeros_like(target)  # a slice without tumour, predicted (almost) empty
    batch_logits = torch.cat([logits, torch.full_like(logits, -6.0)]).requires_grad_(True)
    batch_target = torch.cat([target, empty])
    dice = _loss("dice")
    pooled = dice(batch_logits, batch_target)
    prob = torch.sigmoid(batch_logits)
    by_hand = 1 - (2 * (prob * batch_target).sum() + 1) / (prob.sum() + batch_target.sum() + 1)
    assert torch.allclose(pooled, by_hand)
    # the empty slice adds only its small false-positive mass, not a failed Dice of its own
    assert abs(float(pooled.detach()) - float(dice(logits, target))) < 0.01
    pooled.backward()
    assert torch.isfinite(batch_logits.grad).all()
    per_image = 1 - (1 / (torch.sigmoid(torch.full((64,), -6.0)).sum() + 1))
    assert float(per_image) > 0.1  # what a per-image Dice would have added for that slice


def test_focal_at_gamma_zero_without_alpha_is_bce_and_matches_torchvision():
    from torchvision.ops import sigmoid_focal_loss

    logits, target = _random()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(_loss("focal", alpha=None, gamma=0.0)(logits, target), bce)
    for alpha, gamma in ((0.25, 2.0), (None, 1.5), (0.6, 0.0)):
        reference = sigmoid_focal_loss(
            logits, target, -1 if alpha is None else alpha, gamma, reduction="mean"
        )
        assert torch.allclose(_loss("focal", alpha=alpha, gamma=gamma)(logits, target), reference)


def test_focal_down_weights_easy_pixels():
    logits, target = _random()
    focused = _loss("focal", alpha=None, gamma=2.0)(logits, target)
    assert focused < _loss("focal", alpha=None, gamma=0.0)(logits, target)


def test_losses_compute_in_float32_for_half_precision_logits():
    logits, target = _random(shape=(16, 1, 64, 64))
    for name in ("dice", "dice-bce", "focal"):
        loss = _loss(name)
        low = loss(logits.to(torch.bfloat16), target.to(torch.bfloat16))
        assert low.dtype == torch.float32
        assert float(low) == pytest.approx(float(loss(logits, target)), rel=0.02)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("dice", {"smooth": 0}, r"`smooth` must be > 0, got 0"),
        ("dice", {"smooth": "1"}, r"`smooth` must be a number, got '1'"),
        ("dice-bce", {"dice_weight": 0, "bce_weight": 0}, "both 0"),
        ("dice-bce", {"bce_weight": -1}, r"`bce_weight` must lie in \[0.0, inf\], got -1"),
        ("focal", {"alpha": 1.5}, r"`alpha` must lie in \[0.0, 1.0\], got 1.5"),
        ("focal", {"gamma": -1}, r"`gamma` must lie in \[0.0, inf\], got -1"),
        ("focal", {"gamma": True}, r"`gamma` must be a number, got True"),
    ],
)
def test_bad_arguments_name_the_key(name, params, message):
    with pytest.raises(RecipeError, match=rf"loss: loss '{name}' rejected.*{message}"):
        _loss(name, **params)


def _signature(factory) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(factory).parameters.values()]


def test_lazy_factories_take_what_their_classes_take():
    from lungseg.plugins import _losses, losses

    for factory, cls in ((losses.dice, "DiceLoss"), (losses.dice_bce, "DiceBCELoss")):
        assert _signature(factory) == _signature(getattr(_losses, cls))
        assert getattr(losses, cls) is getattr(_losses, cls)
    assert _signature(losses.focal) == _signature(losses.FocalLoss)


def test_the_losses_are_registered_by_lungseg():
    registry = load_registry()
    for name in ("bce", "dice", "dice-bce", "focal"):
        assert registry.get("loss", name).plugin == "lungseg:losses"
