"""Default losses on logits: ``bce`` (the seed's), ``dice``, ``dice-bce`` and ``focal``.

Tumour is a few per cent of a slice's pixels at most, so pixel-averaged BCE is dominated by
easy background. ``dice`` scores the overlap instead (soft Dice, pooled over the batch, so a
slice without tumour does not count as a failed Dice of its own), ``dice-bce`` adds BCE back
for stable early gradients (nnU-Net's default, Dice + cross-entropy), and ``focal``
down-weights the pixels the model already gets right.

torch is imported when a loss is built, not when this plugin is registered: the factories
below are light functions whose keyword parameters are the recipe parameters, and they
import the loss modules (:mod:`lungseg.plugins._losses`) when called. ``DiceLoss``,
``DiceBCELoss`` and ``FocalLoss`` are importable from here too (on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lungseg import hookimpl

if TYPE_CHECKING:
    from torch import nn

    from lungseg.plugins._losses import DiceBCELoss, DiceLoss, FocalLoss

_CLASSES = ("DiceLoss", "DiceBCELoss", "FocalLoss")


def bce(pos_weight: float | None = None) -> nn.Module:
    """Binary cross-entropy on logits (``BCEWithLogitsLoss``: numerically stable sigmoid + BCE).

    Args:
        pos_weight: weight of tumour pixels relative to background (default: 1, as the seed).
    """
    if pos_weight is not None and pos_weight <= 0:
        raise ValueError(f"`pos_weight` must be > 0, got {pos_weight}")
    import torch
    from torch import nn

    weight = None if pos_weight is None else torch.tensor([float(pos_weight)])
    return nn.BCEWithLogitsLoss(pos_weight=weight)


def dice(smooth: float = 1.0) -> DiceLoss:
    """Soft Dice loss ``1 - Dice`` on sigmoid probabilities, pooled over the batch.

    Args:
        smooth: added to the Dice numerator and denominator (> 0).
    """
    from lungseg.plugins._losses import DiceLoss

    return DiceLoss(smooth)


def dice_bce(dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1.0) -> DiceBCELoss:
    """``dice_weight * (1 - soft Dice) + bce_weight * BCE``, on logits (nnU-Net's Dice + CE).

    Args:
        dice_weight: weight of the Dice term (>= 0).
        bce_weight: weight of the BCE term (>= 0); the two weights may not both be 0.
        smooth: added to the Dice numerator and denominator (> 0).
    """
    from lungseg.plugins._losses import DiceBCELoss

    return DiceBCELoss(dice_weight, bce_weight, smooth)


def focal(alpha: float | None = 0.25, gamma: float = 2.0) -> FocalLoss:
    """Sigmoid focal loss (Lin et al. 2017), averaged over pixels.

    Args:
        alpha: weight of tumour pixels in [0, 1] (background gets ``1 - alpha``), or
            ``None`` for no class weighting.
        gamma: focusing exponent >= 0; 0 with ``alpha=None`` is plain binary cross-entropy.
    """
    from lungseg.plugins._losses import FocalLoss

    return FocalLoss(alpha, gamma)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        from lungseg.plugins import _losses

        return getattr(_losses, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def lungseg_add_losses(registry) -> None:
    registry.add("bce", bce)
    registry.add("dice", dice)
    registry.add("dice-bce", dice_bce)
    registry.add("focal", focal)
