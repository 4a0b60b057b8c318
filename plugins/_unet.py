"""The seed's UNet: DoubleConv blocks, max-pool encoder, transposed-conv decoder, skips.

The ``unet`` plugin (:mod:`lungseg.plugins.unet`) imports this module, and torch with it,
only when a recipe builds the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """(3x3 conv -> [batch norm] -> ReLU) twice; spatial size unchanged."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNet(nn.Module):
    """UNet for binary segmentation.

    Args:
        in_channels: image channels (1 for CT).
        out_channels: output logits per pixel (1 for tumour vs background).
        features: widths of the encoder levels; the bottleneck has twice the last.
        batch_norm: batch normalisation in every DoubleConv.

    Shapes:
        ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)`` logits, any ``H, W``
        (odd sizes are handled by resizing skips).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: list[int] | tuple[int, ...] = (64, 128, 256, 512),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        features = list(features)
        if not features or any(not isinstance(f, int) or f < 1 for f in features):
            raise ValueError(
                f"`features` must be a non-empty list of positive ints, got {features}"
            )
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"`in_channels` and `out_channels` must be >= 1, got {in_channels}, {out_channels}"
            )
        self.downs = nn.ModuleList()
        channels = in_channels
        for width in features:
            self.downs.append(DoubleConv(channels, width, batch_norm))
            channels = width
        self.bottleneck = DoubleConv(features[-1], features[-1] * 2, batch_norm)
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for width in reversed(features):
            self.ups.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.up_convs.append(DoubleConv(width * 2, width, batch_norm))
        self.head = nn.Conv2d(features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips), strict=True):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = conv(torch.cat([skip, x], dim=1))
        return self.head(x)
