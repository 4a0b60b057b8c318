"""The torchvision networks behind :mod:`lungseg_torchvision.models` (imports torch).

:mod:`lungseg_torchvision.models` imports this module when a recipe builds one of its
models, so registering the plugin imports neither torch nor torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import segmentation
from torchvision.models.segmentation.deeplabv3 import ASPPPooling


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Swap the first ``Conv2d`` for a freshly initialised one taking ``in_channels``."""
    for parent in net.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                conv = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    bias=child.bias is not None,
                )
                setattr(parent, child_name, conv)
                return
    raise ValueError(f"{type(net).__name__} has no Conv2d to adapt to {in_channels} channels")


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation network that returns logits as a tensor.

    Args:
        net: a ``torchvision.models.segmentation`` model (returns ``{"out": logits}``).
        in_channels: image channels; the first convolution is rebuilt for them.

    Shapes:
        ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)`` logits for ``H, W`` of
        32 or more, odd sizes included (the backbones downsample 16x or 32x and the heads
        upsample bilinearly; smaller inputs leave batch norms one value per channel).
    """

    def __init__(self, net: nn.Module, in_channels: int = 1) -> None:
        super().__init__()
        _replace_first_conv(net, in_channels)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def _build(
    build: Callable[..., nn.Module], in_channels: int, out_channels: int, **fixed: object
) -> TorchvisionSegmenter:
    net = build(weights=None, weights_backbone=None, num_classes=out_channels, **fixed)
    return TorchvisionSegmenter(net, in_channels)


def fcn_resnet50(in_channels: int, out_channels: int) -> TorchvisionSegmenter:
    return _build(segmentation.fcn_resnet50, in_channels, out_channels, aux_loss=False)


def lraspp_mobilenet(in_channels: int, out_channels: int) -> TorchvisionSegmenter:
    return _build(segmentation.lraspp_mobilenet_v3_large, in_channels, out_channels)


def deeplabv3_mobilenet(in_channels: int, out_channels: int) -> TorchvisionSegmenter:
    """DeepLabV3-MobileNetV3 with a group norm after the ASPP image pooling (see models)."""
    model = _build(
        segmentation.deeplabv3_mobilenet_v3_large, in_channels, out_channels, aux_loss=False
    )
    for module in model.modules():
        if isinstance(module, ASPPPooling):
            for name, child in module.named_children():
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, nn.GroupNorm(32, child.num_features))
    return model
