from __future__ import annotations

import pytest
import torch
from torch import nn

from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry
from lungseg.plugins.unet import DoubleConv


def _unet(**params) -> nn.Module:
    return load_registry().create("model", "unet", {"features": [4, 8], **params}, "model")


@pytest.mark.parametrize(
    ("size", "in_channels", "out_channels"), [(32, 1, 1), (33, 3, 2), (20, 1, 1)]
)
def test_unet_maps_images_to_logits_of_the_same_size(size, in_channels, out_channels):
    model = _unet(in_channels=in_channels, out_channels=out_channels)
    head_out = []
    model.head.register_forward_hook(lambda module, args, out: head_out.append(out))
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, out_channels, size, size)
    assert out.dtype == torch.float32
    # logits: the output is the 1x1 head's, with no sigmoid or clamp after it
    assert torch.equal(out, head_out[0])
    assert out.std() > 0


@pytest.mark.parametrize("batch_norm", [True, False])
def test_unet_is_double_conv_encoder_decoder_with_the_configured_widths(batch_norm):
    model = _unet(features=[4, 8, 16], in_channels=2, out_channels=3, batch_norm=batch_norm)
    blocks = [m for m in model.modules() if isinstance(m, DoubleConv)]
    assert len(blocks) == 2 * 3 + 1  # three down, the bottleneck, three up
    convs = [[m for m in b.modules() if isinstance(m, nn.Conv2d)] for b in blocks]
    assert all(len(c) == 2 and all(k.kernel_size == (3, 3) for k in c) for c in convs)
    assert [c[1].out_channels for c in convs] == [4, 8, 16, 32, 16, 8, 4]
    assert convs[0][0].in_channels == 2
    assert [c[0].in_channels for c in convs[4:]] == [32, 16, 8]  # skip + upsampled
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (2 * 7 if batch_norm else 0)
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels, u.stride) for u in ups] == [
        (32, 16, (2, 2)),
        (16, 8, (2, 2)),
        (8, 4, (2, 2)),
    ]
    assert (model.head.in_channels, model.head.out_channels) == (4, 3)
    assert model.head.kernel_size == (1, 1)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = _unet(features=[4, 8, 16])
    x = torch.randn(2, 1, 24, 24)
    target = (x > 0.5).float()
    nn.functional.binary_cross_entropy_with_logits(model(x), target).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def _squares(n: int, gen: torch.Generator, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with one bright 6x6 square each, at random places; the square's mask."""
    mask = torch.zeros(n, 1, size, size)
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=gen).tolist()
        mask[i, 0, r : r + 6, c : c + 6] = 1
    return mask + 0.3 * torch.randn(n, 1, size, size, generator=gen), mask


def _dice(model: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        pred = (model(x) > 0).float()
    return 2 * (pred * mask).sum((1, 2, 3)) / (pred.sum((1, 2, 3)) + mask.sum((1, 2, 3)))


def test_unet_learns_to_segment_squares_where_they_are():
    """Squares sit at different places: a network that ignores its input cannot pass."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = _unet()
    x, mask = _squares(8, gen)
    loss_fn = load_registry().create("loss", "bce", {}, "loss")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), mask)
        loss.backward()
        opt.step()
    assert _dice(model, x, mask).min() > 0.9  # measured 1.0
    unseen_x, unseen_mask = _squares(8, gen)
    assert _dice(model, unseen_x, unseen_mask).mean() > 0.8  # measured 0.96


def test_unet_rejects_bad_widths():
    with pytest.raises(RecipeError, match="features"):
        load_registry().create("model", "unet", {"features": [4, -1]}, "model")
