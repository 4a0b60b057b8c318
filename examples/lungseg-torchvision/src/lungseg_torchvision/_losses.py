"""The loss modules behind :mod:`lungseg_torchvision.losses` (imports torch and torchvision).

:mod:`lungseg_torchvision.losses` imports this module when a recipe builds one of its
losses, so registering the plugin imports neither torch nor torchvision.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss


def _check_number(key: str, value: object, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{key}` must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"`{key}` must lie in [{low}, {high}], got {value!r}")
    return float(value)


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) from ``torchvision.ops``, averaged over pixels.

    Args:
        alpha: weight of tumour pixels in [0, 1] (background gets ``1 - alpha``), or
            ``None`` for no class weighting.
        gamma: focusing exponent >= 0; 0 gives plain binary cross-entropy.

    Shapes:
        ``logits`` and ``target`` ``(N, 1, H, W)``, target in {0, 1}; returns a scalar.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = -1.0 if alpha is None else _check_number("alpha", alpha, 0.0, 1.0)
        self.gamma = _check_number("gamma", gamma, 0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(
            logits, target.to(logits.dtype), self.alpha, self.gamma, reduction="mean"
        )


class DiceBCELoss(nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)``, on logits.

    The soft Dice is pooled over the whole batch, ``(2 sum(p t) + smooth) /
    (sum(p) + sum(t) + smooth)`` with ``p = sigmoid(logits)``, so a batch without tumour
    gives Dice 1 (loss term 0) when the prediction is empty too.

    Args:
        dice_weight: weight of the Dice term (>= 0).
        bce_weight: weight of the BCE term (>= 0); the two weights may not both be 0.
        smooth: added to the Dice numerator and denominator (> 0).

    Shapes:
        ``logits`` and ``target`` ``(N, 1, H, W)``, target in {0, 1}; returns a scalar.
    """

    def __init__(
        self, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1.0
    ) -> None:
        super().__init__()
        self.dice_weight = _check_number("dice_weight", dice_weight, 0.0)
        self.bce_weight = _check_number("bce_weight", bce_weight, 0.0)
        if self.dice_weight == 0 and self.bce_weight == 0:
            raise ValueError("`dice_weight` and `bce_weight` are both 0; set one of them > 0")
        self.smooth = _check_number("smooth", smooth, 0.0)
        if self.smooth == 0:
            raise ValueError("`smooth` must be > 0, got 0")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
        prob = torch.sigmoid(logits)
        dice = (2 * (prob * target).sum() + self.smooth) / (prob.sum() + target.sum() + self.smooth)
        return self.bce_weight * bce + self.dice_weight * (1 - dice)
