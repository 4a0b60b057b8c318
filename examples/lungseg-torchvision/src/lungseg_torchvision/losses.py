"""A loss lungseg's core lacks: the (focal) Tversky loss, on logits.

lungseg ships ``bce``, ``dice``, ``dice-bce`` and ``focal``; this plugin adds ``tversky``,
which weighs missed tumour and false alarms separately. Registering it imports no torch:
the factory imports the loss module (:mod:`lungseg_torchvision._losses`) when a recipe
builds the loss. ``TverskyLoss`` is importable from here too (on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lungseg import hookimpl

if TYPE_CHECKING:
    from lungseg_torchvision._losses import TverskyLoss


def tversky(
    alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0, smooth: float = 1.0
) -> TverskyLoss:
    """Focal Tversky loss ``(1 - TI) ** gamma``, batch-pooled: misses weigh beta, alarms alpha.

    Args:
        alpha: weight of false positives (>= 0).
        beta: weight of false negatives (>= 0); ``alpha + beta`` must be > 0.
        gamma: exponent of ``1 - TI`` (> 0); 1 is the plain Tversky loss.
        smooth: added to the index's numerator and denominator (> 0).
    """
    from lungseg_torchvision._losses import TverskyLoss

    return TverskyLoss(alpha, beta, gamma, smooth)


def __getattr__(name: str) -> Any:
    if name == "TverskyLoss":
        from lungseg_torchvision._losses import TverskyLoss

        return TverskyLoss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def lungseg_add_losses(registry) -> None:
    registry.add("tversky", tversky)
