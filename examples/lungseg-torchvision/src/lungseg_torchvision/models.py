"""torchvision segmentation networks as lungseg model plugins.

Every network is built without pretrained weights (nothing is downloaded), its first
convolution is replaced to take ``in_channels`` channels (1 for CT), its classifier gives
``out_channels`` logits, and the wrapper returns the ``"out"`` tensor of torchvision's dict.

Registering this plugin imports neither torch nor torchvision (``lungseg preprocess`` and
``lungseg plugins`` stay fast): each factory checks its arguments, then imports the networks
(:mod:`lungseg_torchvision._nets`) when a recipe builds its model. ``TorchvisionSegmenter``
is importable from here too (it imports torch on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lungseg import hookimpl

if TYPE_CHECKING:
    from lungseg_torchvision._nets import TorchvisionSegmenter


def _check_channels(in_channels: int, out_channels: int) -> None:
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{key}` must be a whole number >= 1, got {value!r}")


def fcn_resnet50(in_channels: int = 1, out_channels: int = 1) -> TorchvisionSegmenter:
    """FCN with a ResNet-50 backbone (33M parameters), no pretrained weights."""
    _check_channels(in_channels, out_channels)
    from lungseg_torchvision import _nets

    return _nets.fcn_resnet50(in_channels, out_channels)


def lraspp_mobilenet(in_channels: int = 1, out_channels: int = 1) -> TorchvisionSegmenter:
    """LR-ASPP with a MobileNetV3-Large backbone (3M parameters), no pretrained weights."""
    _check_channels(in_channels, out_channels)
    from lungseg_torchvision import _nets

    return _nets.lraspp_mobilenet(in_channels, out_channels)


def deeplabv3_mobilenet(in_channels: int = 1, out_channels: int = 1) -> TorchvisionSegmenter:
    """DeepLabV3 with a MobileNetV3-Large backbone (11M parameters), no pretrained weights.

    The batch norm after the ASPP image pooling sees one value per channel and image, so a
    training batch of one image would fail; it is replaced by a group norm.
    """
    _check_channels(in_channels, out_channels)
    from lungseg_torchvision import _nets

    return _nets.deeplabv3_mobilenet(in_channels, out_channels)


def __getattr__(name: str) -> Any:
    if name == "TorchvisionSegmenter":
        from lungseg_torchvision._nets import TorchvisionSegmenter

        return TorchvisionSegmenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def lungseg_add_models(registry) -> None:
    registry.add("tv-fcn-resnet50", fcn_resnet50)
    registry.add("tv-deeplabv3-mobilenet", deeplabv3_mobilenet)
    registry.add("tv-lraspp-mobilenet", lraspp_mobilenet)
