"""Losses for imbalanced tumour masks: sigmoid focal loss and Dice + BCE, both on logits.

Registering this plugin imports neither torch nor torchvision: each factory imports the
loss modules (:mod:`lungseg_torchvision._losses`) when a recipe builds its loss.
``FocalLoss`` and ``DiceBCELoss`` are importable from here too (on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lungseg import hookimpl

if TYPE_CHECKING:
    from lungseg_torchvision._losses import DiceBCELoss, FocalLoss


def focal(alpha: float | None = 0.25, gamma: float = 2.0) -> FocalLoss:
    """Sigmoid focal loss (Lin et al. 2017) from ``torchvision.ops``, averaged over pixels.

    Args:
        alpha: weight of tumour pixels in [0, 1] (background gets ``1 - alpha``), or
            ``None`` for no class weighting.
        gamma: focusing exponent >= 0; 0 gives plain binary cross-entropy.
    """
    from lungseg_torchvision._losses import FocalLoss

    return FocalLoss(alpha, gamma)


def dice_bce(dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1.0) -> DiceBCELoss:
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)``, on logits.

    Args:
        dice_weight: weight of the Dice term (>= 0).
        bce_weight: weight of the BCE term (>= 0); the two weights may not both be 0.
        smooth: added to the Dice numerator and denominator (> 0).
    """
    from lungseg_torchvision._losses import DiceBCELoss

    return DiceBCELoss(dice_weight, bce_weight, smooth)


def __getattr__(name: str) -> Any:
    if name in ("FocalLoss", "DiceBCELoss"):
        from lungseg_torchvision import _losses

        return getattr(_losses, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def lungseg_add_losses(registry) -> None:
    registry.add("focal", focal)
    registry.add("dice-bce", dice_bce)
