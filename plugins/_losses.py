"""The loss modules behind :mod:`lungseg.plugins.losses` (imports torch).

:mod:`lungseg.plugins.losses` imports this module when a recipe builds a loss, so registering
the plugin imports no torch. Every loss takes ``(N, 1, H, W)`` logits and float targets in
{0, 1} and returns a scalar; it computes in float32 whatever the logits' precision (a
batch-pooled sum over a million pixels overflows float16).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _number(key: str, value: object, low: float, high: float = math.inf) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``key`` (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{key}` must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"`{key}` must lie in [{low}, {high}], got {value!r}")
    return float(value)


def _positive(key: str, value: object) -> float:
    number = _number(key, value, 0.0)
    if number == 0:
        raise ValueError(f"`{key}` must be > 0, got {value!r}")
    return number


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)``, pooled over the whole batch.

    ``p = sigmoid(logits)``. Pooling the sums over every image of the batch (nnU-Net's
    "batch Dice") keeps an image without tumour from counting as a whole failed Dice: it adds
    only its false-positive mass to the denominator.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    overlap = (prob * target).sum()
    dice = (2 * overlap + smooth) / (prob.sum() + target.sum() + smooth)
    return (1 - dice).clamp_min(0)  # >= 0 also when float rounding puts dice a hair above 1


class DiceLoss(nn.Module):
    """Soft Dice loss on logits, pooled over the batch (see :func:`soft_dice_loss`).

    Args:
        smooth: added to the Dice numerator and denominator (> 0); it makes an empty target
            with an empty prediction score Dice 1 (loss 0).
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = _positive("smooth", smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target, self.smooth)


class DiceBCELoss(nn.Module):
    """``dice_weight * (1 - soft Dice) + bce_weight * BCE`` on logits (nnU-Net's Dice + CE).

    The Dice term is :class:`DiceLoss`'s (batch-pooled); the BCE term is the mean over pixels.

    Args:
        dice_weight: weight of the Dice term (>= 0).
        bce_weight: weight of the BCE term (>= 0); the two weights may not both be 0.
        smooth: added to the Dice numerator and denominator (> 0).
    """

    def __init__(
        self, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1.0
    ) -> None:
        super().__init__()
        self.dice_weight = _number("dice_weight", dice_weight, 0.0)
        self.bce_weight = _number("bce_weight", bce_weight, 0.0)
        if self.dice_weight == 0 and self.bce_weight == 0:
            raise ValueError("`dice_weight` and `bce_weight` are both 0; set one of them > 0")
        self.smooth = _positive("smooth", smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.bce_weight * bce + self.dice_weight * soft_dice_loss(
            logits, target, self.smooth
        )


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017), averaged over pixels.

    Per pixel ``alpha_t * (1 - p_t) ** gamma * BCE``, where ``p_t`` is the probability given
    to the true class and ``alpha_t`` is ``alpha`` on tumour, ``1 - alpha`` on background.
    The factor is computed as ``exp(gamma * logsigmoid(-z))`` (``z`` the logit signed by the
    target), so it stays finite and differentiable for saturated logits and any ``gamma``.

    Args:
        alpha: weight of tumour pixels in [0, 1] (background gets ``1 - alpha``), or
            ``None`` for no class weighting. 0.25 is RetinaNet's (and ``torchvision.ops``')
            default: with ``gamma`` 2 the focusing already favours the rare class.
        gamma: focusing exponent >= 0; 0 with ``alpha=None`` is plain binary cross-entropy.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = None if alpha is None else _number("alpha", alpha, 0.0, 1.0)
        self.gamma = _number("gamma", gamma, 0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        signed = logits * (2 * target - 1)  # the logit of the true class: p_t = sigmoid(signed)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.gamma:
            loss = loss * torch.exp(self.gamma * F.logsigmoid(-signed))  # (1 - p_t) ** gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return loss.mean()
