"""Training throughput of the framework vs a plain PyTorch loop, side by side on the CPU.

Framework: ``lungseg``'s own Trainer (``build_trainer``: checkpoints, CSV + TensorBoard
loggers), ``SegmentationModule``, ``SliceDataset`` reading a real Zarr store built by
``lungseg preprocess``, and the ``tumor-weighted`` sampler. Plain: the same UNet, loss, Adam
and batch size over the same slices preloaded as tensors, no Lightning. Augmentation is off
in both (it is extra work the plain loop does not do). Only training batches are timed (from
the first batch of an epoch to the end of its last), after one warm-up epoch; the two are
alternated ``--rounds`` times and the best epoch of each is kept.

    python benchmarks/bench_train.py [--features 16 32 64] [--size 64] [--rounds 2]

Prints images/s of each and the ratio framework / plain (target >= 0.95).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lungseg.core.build import assemble
from lungseg.core.recipe import recipe_from_dict
from lungseg.data.synth import write_dataset
from lungseg.preprocess.run import run_preprocess
from lungseg.training.dataset import SliceDataModule
from lungseg.training.train import _quiet_lightning
from lungseg.training.trainer import build_trainer


class EpochTimer(Callback):
    """Seconds and images of every training epoch (batches only, validation excluded)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[float, int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += batch[0].shape[0]
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append((self.end - self.start, self.images))


def framework_rate(recipe, work: Path) -> float:
    recipe.output = str(work / f"run{time.monotonic_ns()}")
    timer = EpochTimer()
    pl.seed_everything(0, workers=True, verbose=False)
    trainer, _, _ = build_trainer(recipe, Path(recipe.output), [timer])
    module = assemble(recipe).module()
    trainer.fit(module, datamodule=SliceDataModule(assemble(recipe)))
    return max(images / seconds for seconds, images in timer.epochs[1:])


def plain_rate(recipe, epochs: int) -> float:
    data = SliceDataModule(assemble(recipe))
    data.setup("fit")
    items = [data.train_set[i] for i in range(len(data.train_set))]
    images = torch.stack([i for i, _ in items])
    masks = torch.stack([m for _, m in items])
    parts = assemble(recipe)
    torch.manual_seed(0)
    model, loss_fn = parts.model(), parts.loss()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.optimizer.lr)
    model.train()
    batch = recipe.trainer.batch_size
    rates = []
    for _ in range(epochs + 1):
        order = torch.randperm(len(images))
        start = time.perf_counter()
        for k in range(0, len(order), batch):
            idx = order[k : k + batch]
            loss = loss_fn(model(images[idx]), masks[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(order) / (time.perf_counter() - start))
    return max(rates[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--size", type=int, default=64, help="in-plane pixels of the slices")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    _quiet_lightning()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = write_dataset(
            work / "data", args.cases, seed=0, size=args.size, slices=50, abdomen_slices=10
        )
        recipe = recipe_from_dict(
            {
                "data": {"source": "folder", "root": str(root)},
                "store": {"path": str(work / "store.zarr")},
                "preprocess": [
                    {"name": "canonical"},
                    {"name": "skip-slices", "count": 10},
                    {"name": "normalize", "divisor": 3071},
                    {"name": "resize", "size": args.size},
                ],
                "split": {"val_fraction": 0.2},
                "augment": {"enabled": False},
                "model": {"name": "unet", "features": args.features},
                "trainer": {
                    "accelerator": "cpu",
                    "devices": 1,
                    "max_epochs": args.epochs + 1,
                    "batch_size": args.batch,
                    "enable_progress_bar": False,
                },
            },
            source="bench_train",
        )
        run_preprocess(recipe, workers=1, progress=False)
        fw, plain = [], []
        for _ in range(args.rounds):
            fw.append(framework_rate(recipe, work))
            plain.append(plain_rate(recipe, args.epochs))
        f, p = max(fw), max(plain)
        print(
            f"UNet {args.features} at {args.size}x{args.size}, batch {args.batch}, "
            f"{torch.get_num_threads()} threads; best of {args.rounds}x{args.epochs} epochs"
        )
        print(f"framework (lungseg train): {f:8.1f} images/s  rounds {[round(x, 1) for x in fw]}")
        print(
            f"plain PyTorch loop:        {p:8.1f} images/s  rounds {[round(x, 1) for x in plain]}"
        )
        print(f"ratio framework / plain:   {f / p:8.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
