"""Default losses. ``bce`` is the seed's binary cross-entropy, computed on logits.

torch is imported when a loss is built, not when this plugin is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lungseg import hookimpl

if TYPE_CHECKING:
    from torch import nn


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


@hookimpl
def lungseg_add_losses(registry) -> None:
    registry.add("bce", bce)
