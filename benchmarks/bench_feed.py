"""Feeding training from a slice store larger than the cache, against the seed's .npy files.

One run, side by side, on the same synthetic slices (256x256, written both as a lungseg store
and as the seed's per-slice float64 ``.npy`` files, all in the page cache):

1. random (image, mask) reads in one process without augmentation: the seed's ``np.load``
   pair against ``SliceDataset`` with ``cache_bytes: 0`` (every read from disk), with a cache
   a quarter of the store, and through plain zarr-python; target >= 2x the seed uncached;
2. DataLoader samples/s with 0, 1 and 2 workers, the recipe's augmentation on, for single
   slices and for 5-slice context (``data.context: 2``): the real ``SliceDataset`` over a
   store at least 4x ``cache_bytes``, against a Dataset that loads the seed's files the way
   the seed does (``np.load`` image and mask, albumentations, tensors; 5 files for context);
3. the recipe model's training images/s on this machine (CPU: a few steps), the feed target
   for 2 workers, and the workers needed to feed 1,000 samples/s.

Usage::

    python benchmarks/bench_feed.py --quick      # a minute or two
    python benchmarks/bench_feed.py [--recipe recipes/msd_task06.yaml] [--cases 8]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lungseg.core.build import assemble
from lungseg.core.recipe import load_recipe
from lungseg.data.synth import make_case
from lungseg.store.layout import context_indices
from lungseg.store.slices import SliceStore
from lungseg.training.dataset import SliceDataset, _seed_worker, build_augment

SIZE = 256


def make_data(work: Path, cases: int, slices: int) -> tuple[str, Path, int]:
    """Write ``cases`` synthetic cases as a store and as the seed's files; decoded bytes."""
    store = SliceStore(str(work / "store.zarr"))
    store.initialise([], "bench", overwrite=False)
    seed_dir = work / "seed"
    for i in range(cases):
        image, label, _ = make_case(i, size=SIZE, slices=slices, abdomen_slices=0)
        image = np.moveaxis(image, -1, 0).astype(np.float32) / 3071  # (n, H, W), the seed's /3071
        mask = np.moveaxis(label, -1, 0)
        store.write_case(f"case_{i:03d}", image, mask, {"trace": []})
        for name, data in (("data", image), ("masks", mask)):
            folder = seed_dir / f"case_{i:03d}" / name
            folder.mkdir(parents=True)
            for k, plane in enumerate(data):  # the seed saves cv2.resize's float64 output
                np.save(folder / str(k), plane.astype(np.float64))
    return store.path, seed_dir, cases * slices * SIZE * SIZE * 5


class SeedDataset(Dataset):
    """The seed's Dataset: ``np.load`` the slice's image and mask files, augment, tensors.

    With ``context`` K the image is the 2K+1 neighbouring files, clipped as lungseg clips.
    """

    def __init__(self, seed_dir: Path, transform, context: int) -> None:
        self.transform, self.context = transform, context
        self.items = []
        for case in sorted(seed_dir.iterdir()):
            n = len(list((case / "data").iterdir()))
            self.items += [(case, k, n) for k in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        case, k, n = self.items[i]
        rows = context_indices(k, k + 1, n, self.context)[0]
        planes = [np.load(case / "data" / f"{j}.npy").astype(np.float32) for j in rows]
        image = planes[0] if len(planes) == 1 else np.stack(planes, -1)
        mask = np.load(case / "masks" / f"{k}.npy").astype(np.float32)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(mask[None])


def read_rate(dataset: Dataset, order: np.ndarray) -> float:
    """Items/s of ``dataset[i]`` for ``i`` in ``order``, in this process."""
    t = time.perf_counter()
    for i in order:
        dataset[int(i)]
    return len(order) / (time.perf_counter() - t)


def loader_rate(dataset: Dataset, workers: int, order: np.ndarray, batch: int) -> float:
    """Samples/s through a DataLoader, after two warm-up batches (worker start-up)."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=order.tolist(),
        num_workers=workers,
        worker_init_fn=_seed_worker,
    )
    threads = torch.get_num_threads()
    if workers == 0:  # collate in this process with one thread, as a worker does: OpenMP
        torch.set_num_threads(1)  # threads on a busy machine make torch.stack ~100x slower
    try:
        it = iter(loader)
        for _ in range(2):
            next(it)
        t, samples = time.perf_counter(), 0
        for images, _ in it:
            samples += len(images)
        return samples / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)


def train_rate(recipe, steps: int, batch: int) -> float:
    """Training images/s of the recipe's model, loss and Adam at 256x256 on this machine."""
    parts = assemble(recipe)
    model, loss = parts.model(), parts.loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, SIZE, SIZE)
    y = (torch.rand(batch, 1, SIZE, SIZE) > 0.9).float()
    best = 0.0
    for step in range(steps + 1):
        t = time.perf_counter()
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
        if step:  # the first step is warm-up
            best = max(best, batch / (time.perf_counter() - t))
    return best


def met(ok: bool) -> str:
    return "met" if ok else "missed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases and samples")
    parser.add_argument("--recipe", default="recipes/msd_task06.yaml")
    parser.add_argument("--cases", type=int, default=None, help="default 8, quick 4")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--samples", type=int, default=None, help="per run; default 2000/400")
    parser.add_argument("--train-steps", type=int, default=None, help="default 3, quick 1")
    args = parser.parse_args(argv)
    cases = args.cases or (4 if args.quick else 8)
    samples = args.samples or (400 if args.quick else 2000)
    recipe = load_recipe(args.recipe)
    batch = recipe.trainer.batch_size
    work = Path(tempfile.mkdtemp(prefix="lungseg-feed-"))
    try:
        print(
            f"lungseg feed benchmark: {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at start (other jobs share the machine: compare ratios)"
        )
        store_path, seed_dir, decoded = make_data(work, cases, args.slices)
        cache = decoded // 4  # the store is 4x the cache
        print(
            f"data: {cases} cases x {args.slices} slices {SIZE}x{SIZE}, decoded {decoded / 1e6:.0f}"
            f" MB; cache_bytes {cache / 1e6:.0f} MB (store = 4x cache); batch {batch}"
        )
        rng = np.random.default_rng(0)
        order = rng.integers(0, cases * args.slices, samples)

        # (1) raw random reads, no augmentation, one process
        seed_rate = read_rate(SeedDataset(seed_dir, None, 0), order)
        rows = {}
        for label, cache_bytes, fast in (
            ("cache_bytes 0 (every read from disk)", 0, True),
            ("cache a quarter of the store", cache, True),
            ("plain zarr-python, cache_bytes 0", 0, False),
        ):
            store = SliceStore(store_path, cache_bytes=cache_bytes)
            store.fast_reads = fast
            dataset = SliceDataset(store, store.cases())
            rows[label] = read_rate(dataset, order[: samples if fast else samples // 4])
        print(f"(1) random reads, pairs/s, one process: seed np.load {seed_rate:.0f}")
        for label, rate in rows.items():
            print(f"    lungseg {label:40s} {rate:7.0f}  ({rate / seed_rate:.2f}x seed)")
        uncached = rows["cache_bytes 0 (every read from disk)"] / seed_rate

        # (2) DataLoader with augmentation
        augment = build_augment(recipe.augment, seed=0)
        feed: dict[tuple[int, int, str], float] = {}
        print(f"(2) DataLoader samples/s, augmentation of {args.recipe}:")
        for context in (0, 2):
            for workers in (0, 1, 2):
                store = SliceStore(store_path, cache_bytes=cache)
                ours = SliceDataset(store, store.cases(), augment, context)
                theirs = SeedDataset(seed_dir, augment, context)
                for name, dataset in (("seed", theirs), ("lungseg", ours)):
                    feed[context, workers, name] = loader_rate(dataset, workers, order, batch)
                r_seed, r_ours = feed[context, workers, "seed"], feed[context, workers, "lungseg"]
                print(
                    f"    {2 * context + 1} slice(s), {workers} workers: seed {r_seed:7.0f} | "
                    f"lungseg {r_ours:7.0f} ({r_ours / r_seed:.2f}x)"
                )
            store = SliceStore(store_path, cache_bytes=0)
            ours = SliceDataset(store, store.cases(), augment, context)
            r_none = loader_rate(ours, 2, order, batch)
            print(f"    {2 * context + 1} slice(s), 2 workers, no cache: {r_none:.0f}")

        # (3) the model's appetite
        steps = args.train_steps or (1 if args.quick else 3)
        trained = train_rate(recipe, steps, batch=2)
        model = f"{recipe.model.name} {recipe.model.params}"
        print(f"(3) {model} training on this machine's CPU: {trained:.2f} images/s")
        print("summary:")
        print(f"uncached random reads: {uncached:.2f}x seed (target >= 2x): {met(uncached >= 2)}")
        for context in (0, 2):
            two, one = feed[context, 2, "lungseg"], feed[context, 1, "lungseg"]
            need = math.ceil(1000 / one)
            print(
                f"feed, {2 * context + 1} slice(s), augmentation, 2 workers: {two:.0f} samples/s "
                f"vs "
                f"training {trained:.2f} images/s (target >= training): {met(two >= trained)}; "
                f"about {need} workers for 1,000 samples/s ({one:.0f} per worker)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
