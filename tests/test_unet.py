from __future__ import annotations

import pytest
import torch

from lungseg.errors import RecipeError
from lungseg.manager import load_registry


@pytest.mark.parametrize("size", [32, 33, 20])
def test_unet_maps_images_to_logits_of_the_same_size(size):
    model = load_registry().create("model", "unet", {"features": [4, 8]}, "model")
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 1, size, size)
    assert out.dtype == torch.float32
    assert out.min() < 0 or out.max() > 1  # logits, not probabilities


def test_unet_learns_a_trivial_mask():
    torch.manual_seed(0)
    model = load_registry().create("model", "unet", {"features": [4, 8]}, "model")
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 4:10, 4:10] = 1
    loss_fn = load_registry().create("loss", "bce", {}, "loss")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), x)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


def test_unet_rejects_bad_widths():
    with pytest.raises(RecipeError, match="features"):
        load_registry().create("model", "unet", {"features": [4, -1]}, "model")
