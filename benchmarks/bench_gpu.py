"""GPU training throughput of the seed UNet at 256x256: fp32 vs bf16 + channels_last (+ compile).

Self-contained: needs only torch (the UNet is the seed's, copied here). For each variant it
times full training steps (forward, BCE loss, backward, Adam) and reports images/s and model
FLOP utilisation (MFU): FLOPs of one step counted by ``torch.utils.flop_counter`` divided by
step time and by the card's dense peak for that precision.

    python benchmarks/bench_gpu.py [--batch 32] [--steps 30] [--no-compile]

Without a CUDA GPU it prints a message and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Dense peak TFLOP/s by card name fragment: (fp32 non-tensor-core, bf16 tensor-core).
PEAKS = {
    "H200": (67.0, 989.0),
    "H100 PCIe": (51.0, 756.0),
    "H100": (67.0, 989.0),  # SXM
    "A100": (19.5, 312.0),
}


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


def peak_tflops(name: str) -> tuple[float, float] | None:
    """The card's dense (fp32, bf16) peaks, or ``None`` for an unknown card."""
    for key, peak in PEAKS.items():
        if key in name:
            return peak
    return None


def run_variant(
    label: str, batch: int, steps: int, bf16: bool, channels_last: bool, compile_: bool
) -> tuple[float, float]:
    """Time ``steps`` training steps after warm-up.

    Returns:
        (images per second, FLOPs per step).
    """
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = UNet().cuda().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, 256, 256, device="cuda").contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, 256, 256, device="cuda") > 0.9).float()
    net = torch.compile(model) if compile_ else model

    def step() -> None:
        ctx = torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.binary_cross_entropy_with_logits(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:  # counted on the eager model
        ctx = torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        loss.backward()
    flops = float(counter.get_total_flops())
    opt.zero_grad(set_to_none=True)
    for _ in range(5 if not compile_ else 10):  # warm-up (and compilation)
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return batch * steps / seconds, flops * steps / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU found; nothing to measure (run it on a GPU machine)")
        return 0
    name = torch.cuda.get_device_name()
    peaks = peak_tflops(name)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {name}; torch {torch.__version__}; UNet 64-1024, 256x256, batch {args.batch}")
    variants = [("fp32", False, False, False), ("bf16-mixed + channels_last", True, True, False)]
    if not args.no_compile:
        variants.append(("bf16-mixed + channels_last + compile", True, True, True))
    base = None
    for label, bf16, cl, comp in variants:
        try:
            rate, flops_per_s = run_variant(label, args.batch, args.steps, bf16, cl, comp)
        except Exception as exc:  # e.g. compile without a working toolchain
            print(f"{label:<40} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        base = base or rate
        mfu = ""
        if peaks:
            peak = peaks[1] if bf16 else peaks[0]
            mfu = f"  MFU {100 * flops_per_s / (peak * 1e12):5.1f}% of {peak:.0f} TFLOP/s"
        print(
            f"{label:<40} {rate:8.1f} images/s  {flops_per_s / 1e12:7.1f} TFLOP/s"
            f"{mfu}  x{rate / base:.2f} vs fp32"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
