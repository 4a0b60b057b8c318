"""The loss module behind :mod:`lungseg_torchvision.losses` (imports torch).

:mod:`lungseg_torchvision.losses` imports this module when a recipe builds its loss, so
registering the plugin imports no torch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_number(key: str, value: object, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{key}` must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"`{key}` must lie in [{low}, {high}], got {value!r}")
    return float(value)


class TverskyLoss(nn.Module):
    """Focal Tversky loss ``(1 - TI) ** gamma`` on logits, pooled over the batch.

    ``TI = (TP + smooth) / (TP + alpha FP + beta FN + smooth)`` with soft counts
    ``TP = sum(p t)``, ``FP = sum(p (1 - t))``, ``FN = sum((1 - p) t)``, ``p = sigmoid(logits)``
    (Salehi et al. 2017). ``alpha = beta = 0.5`` is lungseg's ``dice`` loss with ``2 * smooth``;
    ``beta > alpha`` penalises missed tumour more than false alarms, which favours recall on
    small lesions.
    ``gamma < 1`` (Abraham and Khan 2019 use 0.75) keeps the gradient large near TI = 1.

    Args:
        alpha: weight of false positives (>= 0).
        beta: weight of false negatives (>= 0); ``alpha + beta`` must be > 0.
        gamma: exponent of ``1 - TI`` (> 0); 1 is the plain Tversky loss.
        smooth: added to the index's numerator and denominator (> 0).

    Shapes:
        ``logits`` and ``target`` ``(N, 1, H, W)``, target in {0, 1}; returns a scalar.
    """

    def __init__(
        self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0, smooth: float = 1.0
    ) -> None:
        super().__init__()
        self.alpha = _check_number("alpha", alpha, 0.0)
        self.beta = _check_number("beta", beta, 0.0)
        if self.alpha + self.beta == 0:
            raise ValueError("`alpha` and `beta` are both 0; set one of them > 0")
        self.gamma = _check_number("gamma", gamma, 0.0)
        self.smooth = _check_number("smooth", smooth, 0.0)
        if self.gamma == 0 or self.smooth == 0:
            raise ValueError(f"`gamma` and `smooth` must be > 0, got {gamma!r} and {smooth!r}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logits.float())  # float32 sums: float16 overflows on a batch
        target = target.float()
        tp = (prob * target).sum()
        fp = prob.sum() - tp
        fn = target.sum() - tp
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        # 1e-7: (1 - TI) ** gamma has an infinite slope at TI = 1 when gamma < 1
        return (1 - index).clamp_min(1e-7) ** self.gamma
