"""GPU training throughput of the seed UNet at 256x256: fp32 (strict and TF32), bf16 (+ compile).

Self-contained: needs only torch (the UNet is the seed's, copied here). For each variant it
times full training steps (forward, BCE loss, backward, Adam) and reports images/s and model
FLOP utilisation (MFU): FLOPs of one step counted by ``torch.utils.flop_counter`` divided by
step time and by the card's dense peak for that precision. The variants:

- ``fp32 strict``: TF32 off for convolutions and matrix products (true fp32);
- ``fp32 default``: PyTorch's defaults, which run convolutions in TF32 on tensor cores
  (``torch.backends.cudnn.allow_tf32`` is on by default): what a user gets, so the speed-ups
  are against it;
- ``bf16-mixed + channels_last``, and the same ``+ compile``.

    python benchmarks/bench_gpu.py [--batch 32] [--steps 30] [--no-compile] [--cpu-smoke]

Without a CUDA GPU it says so and exits 0. ``--cpu-smoke`` runs every variant on the CPU at
toy sizes (a 4-8 UNet, 32x32, batch 2, ``torch.compile`` with the ``eager`` backend) to check
the code paths; its figures mean nothing. Exit status 1 when a variant fails.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Dense peak TFLOP/s by card name fragment: (fp32 CUDA cores, tf32 and bf16 tensor cores).
PEAKS = {
    "H200": (67.0, 494.7, 989.4),
    "H100 PCIe": (51.2, 378.0, 756.0),
    "H100": (67.0, 494.7, 989.4),  # SXM
    "A100": (19.5, 156.0, 312.0),
}
MFU_GOAL = 0.40
"""Goal for bf16 on an H100/H200 at batch 32."""


@dataclass(frozen=True)
class Variant:
    label: str
    tf32: bool
    bf16: bool
    channels_last: bool
    compile: bool

    @property
    def peak_index(self) -> int:
        return 2 if self.bf16 else int(self.tf32)


VARIANTS = [
    Variant("fp32 strict (TF32 off)", False, False, False, False),
    Variant("fp32 default (TF32 convolutions)", True, False, False, False),
    Variant("bf16-mixed + channels_last", True, True, True, False),
    Variant("bf16-mixed + channels_last + compile", True, True, True, True),
]
BASELINE = VARIANTS[1].label


class DoubleConv(nn.Sequential):
    """(3x3 conv -> batch norm -> ReLU) twice."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """The seed's UNet: widths 64-128-256-512, bottleneck 1024; ``(N,1,H,W)`` -> logits."""

    def __init__(self, features: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.downs = nn.ModuleList()
        channels = 1
        for width in features:
            self.downs.append(DoubleConv(channels, width))
            channels = width
        self.bottleneck = DoubleConv(features[-1], features[-1] * 2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w * 2, w, 2, 2) for w in reversed(features))
        self.up_convs = nn.ModuleList(DoubleConv(w * 2, w) for w in reversed(features))
        self.head = nn.Conv2d(features[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips), strict=True):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def peak_tflops(name: str) -> tuple[float, float, float] | None:
    """The card's dense (fp32, tf32, bf16) peaks, or ``None`` for an unknown card."""
    for key, peak in PEAKS.items():
        if key in name:
            return peak
    return None


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for convolutions (cuDNN) as asked; matrix products at PyTorch's default (off)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def run_variant(
    variant: Variant,
    *,
    batch: int,
    steps: int,
    device: str = "cuda",
    size: int = 256,
    features: tuple[int, ...] = (64, 128, 256, 512),
    warmup: int = 5,
    backend: str = "inductor",
) -> tuple[float, float]:
    """Time ``steps`` training steps after warm-up.

    Returns:
        (images per second, FLOP/s).
    """
    torch.manual_seed(0)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = UNet(features).to(device).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()
    net = torch.compile(model, backend=backend) if variant.compile else model

    def autocast():
        if variant.bf16:
            return torch.autocast(device, torch.bfloat16)
        return contextlib.nullcontext()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        with autocast():
            loss = F.binary_cross_entropy_with_logits(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with tf32(variant.tf32):
        with FlopCounterMode(display=False) as counter:  # counted on the eager model
            with autocast():
                loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
            loss.backward()
        flops = float(counter.get_total_flops())
        opt.zero_grad(set_to_none=True)
        for _ in range(2 * warmup if variant.compile else warmup):  # warm-up (and compile)
            step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
    seconds = time.perf_counter() - start
    return batch * steps / seconds, flops * steps / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="toy sizes on the CPU: checks the code only"
    )
    args = parser.parse_args(argv)
    variants = [v for v in VARIANTS if not (args.no_compile and v.compile)]
    if args.cpu_smoke:
        device, name, peaks = "cpu", "CPU (smoke run: the figures mean nothing)", None
        sizes = {"size": 32, "features": (4, 8), "warmup": 1, "backend": "eager"}
        batch, steps = 2, 2
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU found; nothing to measure (run it on a GPU machine)")
        return 0
    else:
        device, name = "cuda", torch.cuda.get_device_name()
        peaks = peak_tflops(name)
        sizes, batch, steps = {}, args.batch, args.steps
        torch.backends.cudnn.benchmark = True
    print(f"device: {name}; torch {torch.__version__}; batch {batch}")
    rates: dict[str, float] = {}
    failed = []
    best_bf16 = 0.0
    for variant in variants:
        try:
            rate, flops_per_s = run_variant(
                variant, batch=batch, steps=steps, device=device, **sizes
            )
        except Exception as exc:  # e.g. compile without a working toolchain
            print(f"{variant.label:<40} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            failed.append(variant.label)
            continue
        rates[variant.label] = rate
        mfu = ""
        if peaks:
            peak = peaks[variant.peak_index]
            share = flops_per_s / (peak * 1e12)
            best_bf16 = max(best_bf16, share) if variant.bf16 else best_bf16
            mfu = f"  MFU {100 * share:5.1f}% of {peak:.0f} TFLOP/s"
        base = rates.get(BASELINE)
        versus = f"  x{rate / base:.2f} vs fp32 default" if base else ""
        print(
            f"{variant.label:<40} {rate:8.1f} images/s  {flops_per_s / 1e12:7.1f} TFLOP/s"
            f"{mfu}{versus}"
        )
    strict = rates.get(VARIANTS[0].label)
    if strict and rates.get(BASELINE):
        print(
            f"TF32 convolutions (PyTorch's default) vs strict fp32: x{rates[BASELINE] / strict:.2f}"
        )
    if peaks and batch == 32:
        verdict = "met" if best_bf16 >= MFU_GOAL else "NOT met"
        print(f"goal: bf16 MFU >= {100 * MFU_GOAL:.0f}% at batch 32: {verdict} "
              f"({100 * best_bf16:.1f}%)")  # fmt: skip
    if failed:
        print(f"bench_gpu: failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
