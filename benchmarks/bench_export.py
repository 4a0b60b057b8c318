"""Export benchmark: ``lungseg export`` time, and onnxruntime against PyTorch on the CPU.

A lungseg checkpoint is written for a UNet of the given widths and slice size (random
weights: speed does not depend on them), exported to ONNX and TorchScript (each export
includes its own check against PyTorch), and the network is run on one batch of slices by
PyTorch (eager, ``inference_mode``) and by onnxruntime's CPU provider, ``--runs`` times each
after one warm-up; the median seconds per batch and their ratio are printed. Both use the
machine's default thread counts.

Usage::

    python benchmarks/bench_export.py                      # the seed UNet at 256 x 256
    python benchmarks/bench_export.py --features 4 8 --size 32 --batch 16   # the test model
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_checkpoint(path: Path, features: list[int], size: int) -> Path:
    """A lungseg checkpoint of an untrained UNet with the seed chain resized to ``size``."""
    from lungseg import __version__
    from lungseg.core.build import assemble
    from lungseg.core.recipe import recipe_from_dict

    raw = {
        "model": {"name": "unet", "features": features},
        "preprocess": [
            {"name": "canonical"},
            {"name": "skip-slices"},
            {"name": "normalize"},
            {"name": "resize", "size": size},
        ],
    }
    parts = assemble(recipe_from_dict(raw))
    module = parts.module()
    info = {"version": __version__, "recipe": parts.recipe.to_dict(), "epoch": 0}
    torch.save({"state_dict": module.state_dict(), "lungseg": info}, path)
    return path


def timed(fn, runs: int) -> float:
    """Median seconds of ``fn()`` over ``runs`` calls, after one warm-up call."""
    fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--size", type=int, default=256, help="slice size (resize.size)")
    parser.add_argument("--batch", type=int, default=4, help="slices per forward pass")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime as ort

    from lungseg.inference.export import export
    from lungseg.training.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = write_checkpoint(work / "best.ckpt", args.features, args.size)
        exports = {}
        for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
            start = time.perf_counter()
            (model_path, _) = export(ckpt, fmt, work / name)
            exports[fmt] = (time.perf_counter() - start, model_path.stat().st_size)
        network = load_checkpoint(ckpt)[0].model.eval()
        session = ort.InferenceSession(str(work / "m.onnx"), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        batch = rng.normal(0, 0.3, (args.batch, 1, args.size, args.size)).astype(np.float32)
        tensor = torch.from_numpy(batch)

        def run_torch() -> None:
            with torch.inference_mode():
                network(tensor)

        def run_ort() -> None:
            session.run(None, {"image": batch})

        torch_s, ort_s = timed(run_torch, args.runs), timed(run_ort, args.runs)

    params = sum(p.numel() for p in network.parameters())
    print(f"UNet features {args.features}, {params / 1e6:.2f} M parameters, slices {args.size}")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{ort.__version__}"
    )
    for fmt, (seconds, size) in exports.items():
        print(f"export {fmt:12s} {seconds:7.2f} s  ({size / 1e6:.2f} MB, check included)")
    print(
        f"forward, batch {args.batch}: torch {torch_s * 1e3:8.1f} ms   onnxruntime "
        f"{ort_s * 1e3:8.1f} ms   torch / onnxruntime {torch_s / ort_s:.2f}x"
    )


if __name__ == "__main__":
    main()
