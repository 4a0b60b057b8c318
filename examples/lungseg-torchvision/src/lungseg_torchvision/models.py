"""torchvision segmentation networks as lungseg model plugins.

Every network is built without pretrained weights (nothing is downloaded), its first
convolution is replaced to take ``in_channels`` channels (1 for CT), its classifier gives
``out_channels`` logits, and the wrapper returns the ``"out"`` tensor of torchvision's dict.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import segmentation
from torchvision.models.segmentation.deeplabv3 import ASPPPooling

from lungseg import hookimpl


def _check_channels(in_channels: int, out_channels: int) -> None:
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{key}` must be a whole number >= 1, got {value!r}")


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


def _factory(build: Callable[..., nn.Module], doc: str, **fixed: object):
    def factory(in_channels: int = 1, out_channels: int = 1) -> TorchvisionSegmenter:
        _check_channels(in_channels, out_channels)
        net = build(weights=None, weights_backbone=None, num_classes=out_channels, **fixed)
        return TorchvisionSegmenter(net, in_channels)

    factory.__doc__ = doc
    factory.__name__ = build.__name__
    return factory


fcn_resnet50 = _factory(
    segmentation.fcn_resnet50,
    "FCN with a ResNet-50 backbone (33M parameters), no pretrained weights.",
    aux_loss=False,
)
lraspp_mobilenet = _factory(
    segmentation.lraspp_mobilenet_v3_large,
    "LR-ASPP with a MobileNetV3-Large backbone (3M parameters), no pretrained weights.",
)
_deeplabv3_mobilenet = _factory(
    segmentation.deeplabv3_mobilenet_v3_large,
    "",
    aux_loss=False,
)


def deeplabv3_mobilenet(in_channels: int = 1, out_channels: int = 1) -> TorchvisionSegmenter:
    """DeepLabV3 with a MobileNetV3-Large backbone (11M parameters), no pretrained weights.

    The batch norm after the ASPP image pooling sees one value per channel and image, so a
    training batch of one image would fail; it is replaced by a group norm.
    """
    model = _deeplabv3_mobilenet(in_channels, out_channels)
    for module in model.modules():
        if isinstance(module, ASPPPooling):
            for name, child in module.named_children():
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, nn.GroupNorm(32, child.num_features))
    return model


@hookimpl
def lungseg_add_models(registry) -> None:
    registry.add("tv-fcn-resnet50", fcn_resnet50)
    registry.add("tv-deeplabv3-mobilenet", deeplabv3_mobilenet)
    registry.add("tv-lraspp-mobilenet", lraspp_mobilenet)
