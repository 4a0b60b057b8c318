"""A short real training run on synthetic data: images/s, and whether the loader kept up.

Writes a synthetic dataset with ``lungseg synth`` and its slice store with ``lungseg
preprocess`` (the CLI, in subprocesses), then trains with :func:`lungseg.training.train.train`
(what ``lungseg train`` runs) from a recipe with ``trainer.precision: bf16-mixed``,
``channels_last`` and ``accelerator: gpu``, adding one timing callback. Per training step it
takes the time from the end of the previous step to the start of this one: the main process
waiting for the loader's next batch (and its copy to the device). Without a per-step
synchronisation the GPU keeps working through its queue meanwhile, so a wait is lost GPU
time only once the queue runs dry: a small waiting fraction means the loader kept up.

Prints images/s over the epochs after the first (warm-up: cuDNN autotuning, loader workers
starting) and the fraction of that time spent waiting on data. Exit status 1 when a command
or the training fails.

    python benchmarks/gpu_train_check.py --work DIR [--cases 24] [--size 256] [--epochs 3]
        [--batch 32] [--workers 8] [--features 64,128,256,512] [--cpu-smoke]

``--cpu-smoke``: toy sizes on the CPU (``accelerator: cpu``, no loader workers), to check
that the run goes through; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

KEPT_UP = 0.05
"""Largest fraction of training time spent waiting on data for "the loader kept up"."""


def timer_callback(device: str):
    """A Lightning callback timing each training epoch and the waits for data between steps."""
    import pytorch_lightning as pl
    import torch

    class LoaderTimer(pl.Callback):
        def __init__(self) -> None:
            self.epochs: list[tuple[int, float, float]] = []  # (images, seconds, waiting)

        def _sync(self) -> None:
            if device == "gpu":
                torch.cuda.synchronize()

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._sync()
            self.start = self.last = time.perf_counter()
            self.images, self.waiting = 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.waiting += time.perf_counter() - self.last

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.images += int(batch[0].shape[0])
            self.last = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._sync()
            self.epochs.append((self.images, time.perf_counter() - self.start, self.waiting))

    return LoaderTimer()


def recipe_for(args: argparse.Namespace, work: Path, synth: dict) -> dict:
    smoke = args.cpu_smoke
    return {
        "name": "gpu-check",
        "data": {"source": "synthetic", "root": str(work / "data"), "synthetic": synth},
        "store": {"path": str(work / "store.zarr")},
        "output": str(work / "run"),
        "preprocess": [
            {"name": "canonical"},
            {"name": "skip-slices", "count": synth["abdomen_slices"]},
            {"name": "normalize", "divisor": 3071},
            {"name": "resize", "size": synth["size"]},
        ],
        "split": {"val_fraction": 0.2, "seed": 0},
        "augment": {"enabled": True, "p": 0.5, "rotate": 10, "scale": [0.9, 1.1]},
        "sampler": {"name": "tumor-weighted"},
        "model": {"name": "unet", "features": [int(f) for f in args.features.split(",")]},
        "trainer": {
            "max_epochs": args.epochs,
            "accelerator": "cpu" if smoke else "gpu",
            "devices": 1,
            "precision": "bf16-mixed",
            "channels_last": True,
            "batch_size": args.batch,
            "num_workers": 0 if smoke else args.workers,
            "enable_progress_bar": False,
            "log_every_n_steps": 1 if smoke else 10,
            "loggers": ["csv"],
        },
    }


def lungseg(*args: str) -> None:
    """Run a ``lungseg`` command in a subprocess; raise when it fails."""
    cmd = [sys.executable, "-m", "lungseg", "-q", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {done.returncode}: {done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a new or empty folder for data and run")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=90)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--features", default="64,128,256,512")
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.cases, args.size, args.slices, args.epochs = 3, 32, 16, 2
        args.batch, args.features = 4, "4,8"
    work = Path(args.work)
    synth = {
        "cases": args.cases,
        "seed": 0,
        "size": args.size,
        "slices": args.slices,
        "abdomen_slices": 4 if args.cpu_smoke else 30,
        "test_cases": 1,
    }
    try:
        import torch

        if not args.cpu_smoke and not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU found (use --cpu-smoke to check the code on a CPU)")
        lungseg(
            "synth", str(work / "data"), *(f"--{k.replace('_', '-')}={v}" for k, v in synth.items())
        )
        recipe_file = work / "gpu_check.yaml"
        recipe_file.write_text(yaml.safe_dump(recipe_for(args, work, synth), sort_keys=False))
        lungseg("preprocess", str(recipe_file))

        from lungseg.core.recipe import load_recipe
        from lungseg.training.train import train

        timer = timer_callback("cpu" if args.cpu_smoke else "gpu")
        result = train(load_recipe(recipe_file), callbacks=[timer])
    except Exception as exc:
        print(f"gpu_train_check: FAILED: {type(exc).__name__}: {exc}")
        return 1
    steady = timer.epochs[1:] or timer.epochs
    images = sum(e[0] for e in steady)
    seconds = sum(e[1] for e in steady)
    waiting = sum(e[2] for e in steady) / seconds
    device = "CPU (smoke run: the figures mean nothing)" if args.cpu_smoke else "GPU"
    workers = 0 if args.cpu_smoke else args.workers
    print(f"train: {device}, bf16-mixed, channels_last, UNet {args.features}, "
          f"{args.size}x{args.size}, batch {args.batch}, {workers} loader workers; "
          f"best checkpoint {result.best}")  # fmt: skip
    print(f"  {images / seconds:.1f} images/s over {len(steady)} epoch(s) after the first; "
          f"waiting on data {100 * waiting:.1f}% of training time: loader "
          f"{'kept up' if waiting <= KEPT_UP else 'did NOT keep up'} "
          f"(<= {100 * KEPT_UP:.0f}%)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
