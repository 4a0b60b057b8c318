"""Contract checks for networks and losses (torch is imported by these checks only)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from lungseg.testing._util import _block, _fail

if TYPE_CHECKING:
    import torch
    from torch import nn


def _images(n: int, h: int, w: int, in_channels: int, seed: int) -> tuple[torch.Tensor, ...]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(n, in_channels, h, w, generator=gen)
    target = torch.zeros(n, 1, h, w)
    target[:, :, h // 4 : h // 2 + 1, w // 3 : w // 2 + 2] = 1.0
    return image + 2.0 * target, target


def check_model(
    build: Callable[[], nn.Module],
    *,
    size: int = 32,
    odd_size: tuple[int, int] = (33, 47),
    in_channels: int = 1,
    steps: int = 3,
    seed: int = 0,
) -> None:
    """Check a model plugin: ``(N, C, H, W)`` images in, ``(N, 1, H, W)`` float logits out.

    Checks the output shape and dtype at ``size`` (use the recipe's ``resize`` size) and at
    ``odd_size``, a training step on a batch of one (loaders keep a last short batch),
    gradients reaching every trainable parameter, and that the outputs are logits: after
    ``steps`` Adam steps towards a block mask some output lies outside ``[0, 1]``, which a
    network ending in a sigmoid never does.

    Args:
        build: returns a fresh model (e.g. ``lambda: registry.create("model", ...)``).
        size: square input size, the recipe's slice size.
        odd_size: a non-square size not divisible by 2 or 32, ``(H, W)``.
        in_channels: image channels the model takes.
        steps: optimisation steps before the logits check.
        seed: seeds the weights and the inputs.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = build()
    if not isinstance(model, nn.Module):
        _fail(f"the model factory returned {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    for h, w in ((size, size), odd_size):
        image, _ = _images(2, h, w, in_channels, seed)
        with torch.no_grad():
            out = model(image)
        if not isinstance(out, torch.Tensor):
            _fail(f"the model returned {type(out).__name__} for ({h}, {w}), not a tensor")
        if tuple(out.shape) != (2, 1, h, w):
            _fail(
                f"input {tuple(image.shape)} gave output {tuple(out.shape)}, not (2, 1, {h}, {w})"
            )
        if not out.dtype.is_floating_point or not torch.isfinite(out).all():
            _fail(f"the output must be finite floats, got {out.dtype} with non-finite values")
    model.train()
    image, target = _images(1, size, size, in_channels, seed)
    loss = nn.functional.binary_cross_entropy_with_logits(model(image), target)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        _fail("the model has no trainable parameters")
    for name, param in trainable:
        if param.grad is None or not torch.isfinite(param.grad).all():
            _fail(f"no finite gradient reaches parameter {name!r}; is it used in forward?")
    if not any(bool(p.grad.abs().sum() > 0) for _, p in trainable):
        _fail("every gradient is zero: the output does not depend on the parameters")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    image, target = _images(2, size, size, in_channels, seed + 1)
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(image)
        nn.functional.binary_cross_entropy_with_logits(out, target).backward()
        optimizer.step()
    out = out.detach()
    if float(out.min()) >= 0.0 and float(out.max()) <= 1.0:
        _fail("every output lies in [0, 1]: return logits, not probabilities (lungseg applies)")


def check_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int = 0) -> None:
    """Check a loss plugin on ``(N, 1, H, W)`` logits and {0, 1} float targets.

    The loss must be a finite non-negative scalar tensor, differentiable in the logits,
    defined for empty and full targets, and lower for a confident correct prediction than
    for a random one, and lower for a random one than for a confident wrong one.

    Args:
        loss: what the loss factory returned.
        seed: seeds the random logits.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    target = torch.from_numpy(_block((2, 1, 16, 16), (0, 0, 3, 4), (2, 1, 9, 12))).float()
    random = torch.randn(target.shape, generator=gen)
    values = {}
    for label, logits in (
        ("perfect", 8.0 * (2 * target - 1)),
        ("random", random),
        ("wrong", -8.0 * (2 * target - 1)),
    ):
        logits = logits.clone().requires_grad_(True)
        value = loss(logits, target)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            _fail(f"the loss must return a scalar tensor, got {getattr(value, 'shape', value)!r}")
        number = float(value.detach())
        if not math.isfinite(number) or number < 0:
            _fail(f"the loss must be finite and >= 0, got {number} for {label} logits")
        try:
            value.backward()
        except RuntimeError as exc:
            _fail(f"the loss is not differentiable in the logits ({label} prediction): {exc}")
        if logits.grad is None or not torch.isfinite(logits.grad).all():
            _fail(f"the loss is not differentiable in the logits ({label} prediction)")
        values[label] = number
    if not values["perfect"] < values["random"] < values["wrong"]:
        _fail(f"the loss must rank perfect < random < wrong predictions, got {values}")
    for label, fill in (("empty", 0.0), ("full", 1.0)):
        value = loss(random, torch.full_like(target, fill))
        if not torch.isfinite(value) or float(value) < 0:
            _fail(f"the loss must be finite and >= 0 for an {label} target, got {float(value)}")
