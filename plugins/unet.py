"""The ``unet`` model plugin: the seed's UNet (:mod:`lungseg.plugins._unet`).

Registering it imports no torch: the factory imports the network's module when a recipe
builds the model. ``UNet`` and ``DoubleConv`` are still importable from here (on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lungseg import hookimpl

if TYPE_CHECKING:
    from lungseg.plugins._unet import UNet


def unet(
    in_channels: int = 1,
    out_channels: int = 1,
    features: list[int] | tuple[int, ...] = (64, 128, 256, 512),
    batch_norm: bool = True,
) -> UNet:
    """UNet for binary segmentation.

    Args:
        in_channels: image channels (1 for CT).
        out_channels: output logits per pixel (1 for tumour vs background).
        features: widths of the encoder levels; the bottleneck has twice the last.
        batch_norm: batch normalisation in every DoubleConv.
    """
    from lungseg.plugins._unet import UNet

    return UNet(in_channels, out_channels, features, batch_norm)


def __getattr__(name: str) -> Any:
    if name in ("UNet", "DoubleConv"):
        from lungseg.plugins import _unet

        return getattr(_unet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def lungseg_add_models(registry) -> None:
    registry.add("unet", unet)
