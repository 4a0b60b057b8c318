"""Preprocessing and slice-store benchmark: lungseg against the seed's per-slice .npy files.

One command prints every figure and its ratio to the seed's way:

1. preprocessing throughput (slices/s): the seed (nibabel ``get_fdata`` in float64, per-slice
   ``/3071`` and ``cv2.resize``, one ``np.save`` per slice, one process) against
   ``lungseg preprocess`` with 1 and ``--workers`` processes; target >= 4x on 2 cores;
2. random access (image/mask pairs/s) through ``SliceDataset`` against ``np.load`` of the
   seed's files; target >= 2x;
3. bytes on disk, store against the seed's files; target <= 1/10;
4. (the image format and compressor choice: ``benchmarks/bench_store_bytes.py``);
5. peak memory (RSS, measured in a child process) of preprocessing one 512x512x600 volume.

Usage::

    python benchmarks/bench_preprocess.py            # 6 volumes 512x512x120 (+ 512x512x600)
    python benchmarks/bench_preprocess.py --quick    # 2 volumes, a 512x512x200 memory volume
    python benchmarks/bench_preprocess.py --data /tmp/bench-data   # reuse generated volumes

Timings are wall-clock on whatever else the machine runs: the load average is printed, and
each throughput is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED_SKIP, SEED_DIVISOR, SEED_SIZE = 30, 3071, 256  # the seed's constants


# ----------------------------------------------------------------------------- data


def make_data(root: Path, cases: int, size: int, slices: int) -> Path:
    """Synthetic MSD-layout volumes, reused when ``root`` already holds the same ones."""
    from lungseg.data.synth import write_dataset

    stamp = root / "bench.json"
    want = {"cases": cases, "size": size, "slices": slices}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return root
    t = time.perf_counter()
    write_dataset(root, cases, seed=0, size=size, slices=slices, abdomen_slices=30)
    stamp.write_text(json.dumps(want))
    print(f"  wrote {cases} volumes {size}x{size}x{slices} in {time.perf_counter() - t:.0f} s")
    return root


def seed_preprocess(image_path: Path, label_path: Path, out: Path) -> int:
    """The seed's preprocessing of one case, verbatim in spirit: float64, per slice, .npy."""
    import cv2
    import nibabel as nib

    ct = nib.load(str(image_path)).get_fdata()
    label = nib.load(str(label_path)).get_fdata()
    ct = ct[:, :, SEED_SKIP:] / SEED_DIVISOR
    label = label[:, :, SEED_SKIP:]
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(ct.shape[-1]):
        image = cv2.resize(ct[:, :, i], (SEED_SIZE, SEED_SIZE))
        mask = cv2.resize(label[:, :, i], (SEED_SIZE, SEED_SIZE), interpolation=cv2.INTER_NEAREST)
        np.save(out / "data" / str(i), image)
        np.save(out / "masks" / str(i), mask)
    return ct.shape[-1]


def recipe_for(data: Path, store: Path):
    from lungseg.core.recipe import recipe_from_dict

    return recipe_from_dict(
        {
            "data": {"source": "folder", "root": str(data)},
            "store": {"path": str(store)},
            "preprocess": [
                {"name": "canonical"},
                {"name": "skip-slices", "count": SEED_SKIP},
                {"name": "normalize", "divisor": SEED_DIVISOR},
                {"name": "resize", "size": SEED_SIZE},
            ],
        }
    )


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- (1) speed


def bench_preprocess(data: Path, work: Path, workers: int, repeat: int) -> dict:
    from lungseg.core.manager import load_registry
    from lungseg.data.msd import find_cases
    from lungseg.preprocess.run import run_preprocess

    load_registry()  # imports (torch, plugins) are not preprocessing: load them before timing
    cases = find_cases(data)
    seed_best = lungseg_best = one_best = float("inf")
    slices = 0
    for r in range(repeat):
        seed_dir = work / f"seed-{r}"
        t = time.perf_counter()
        slices = sum(seed_preprocess(c.image, c.label, seed_dir / c.case_id) for c in cases)
        seed_best = min(seed_best, time.perf_counter() - t)
        for n, store in ((1, work / f"one-{r}.zarr"), (workers, work / f"store-{r}.zarr")):
            t = time.perf_counter()
            report = run_preprocess(recipe_for(data, store), workers=n, progress=False)
            took = time.perf_counter() - t
            assert report.slices == slices, (report.slices, slices)
            if n == 1:
                one_best = min(one_best, took)
            else:
                lungseg_best = min(lungseg_best, took)
        if r < repeat - 1:
            for path in (seed_dir, work / f"one-{r}.zarr", work / f"store-{r}.zarr"):
                shutil.rmtree(path)
    last = repeat - 1
    return {
        "slices": slices,
        "seed": slices / seed_best,
        "one": slices / one_best,
        "many": slices / lungseg_best,
        "seed_dir": work / f"seed-{last}",
        "store": work / f"store-{last}.zarr",
    }


# ----------------------------------------------------------------------------- (2) reads


def bench_reads(seed_dir: Path, store_path: Path, reads: int) -> dict:
    """Random (image, mask) reads: the seed's np.load pairs against the store.

    Both sides are read from the OS page cache (the files were just written). The store
    side is timed as the first epoch (cold: every case decoded once inside the timing) and
    the next (warm: lungseg's decoded-case cache), through ``SliceDataset`` as shipped.
    """
    import torch

    from lungseg.store.slices import SliceStore
    from lungseg.training.dataset import SliceDataset

    pairs = sorted((p, p.parent.parent / "masks" / p.name) for p in seed_dir.glob("*/data/*.npy"))
    rng = np.random.default_rng(0)

    order = rng.integers(0, len(pairs), reads)
    t = time.perf_counter()
    for i in order:  # the seed's Dataset.__getitem__ without augmentation, as tensors
        image_path, mask_path = pairs[i]
        image = np.load(image_path).astype(np.float32)
        mask = np.load(mask_path).astype(np.float32)
        _ = torch.from_numpy(image[None]), torch.from_numpy(mask[None])
    seed = reads / (time.perf_counter() - t)

    store = SliceStore(str(store_path))
    dataset = SliceDataset(store, store.cases())
    rates = []
    for _epoch in ("cold", "warm"):
        order = rng.integers(0, len(dataset), reads)
        t = time.perf_counter()
        for i in order:
            dataset[int(i)]
        rates.append(reads / (time.perf_counter() - t))

    uncached = SliceStore(str(store_path), cache_bytes=0)
    for case_id in uncached.cases():  # open each case once (metadata, shard index)
        uncached.read_slice(case_id, 0)
    t = time.perf_counter()
    for i in order:
        uncached.read_slice(*dataset.index[int(i)])
    slice_reads = len(order) / (time.perf_counter() - t)
    return {
        "seed": seed,
        "cold": rates[0],
        "warm": rates[1],
        "uncached": slice_reads,
        "pairs": len(dataset),
    }


# ----------------------------------------------------------------------------- (5) memory


def _status(field: str) -> int | None:
    """A ``/proc/self/status`` size in bytes (Linux), or ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _start_measuring() -> int:
    """Reset the peak-RSS mark (Linux ``clear_refs`` 5) and return the resident bytes now."""
    with contextlib.suppress(OSError):  # not Linux: the peak then includes the imports'
        Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak() -> int:
    """The peak resident bytes since :func:`_start_measuring` (Linux), else since start."""
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(case_dir: str, mode: str) -> None:
    """Run in a fresh process: preprocess the one case of ``case_dir``; print RSS as JSON.

    ``base`` is the resident size after imports, ``peak`` the high-water mark while the
    case is processed (the mark is reset after the imports): their difference is what
    preprocessing added.
    """
    from lungseg.data.msd import find_cases

    (case,) = find_cases(case_dir)
    work = Path(tempfile.mkdtemp())
    if mode == "lungseg":
        from lungseg.preprocess.run import _work
        from lungseg.store.slices import SliceStore

        recipe = recipe_for(Path(case_dir), work / "s.zarr")
        from lungseg.preprocess.run import _worker_chain

        _worker_chain(recipe)  # imports and plugins before the baseline
        store = SliceStore(recipe.store.path, cache_bytes=0)
        store.initialise(recipe.preprocess_dict(), recipe.preprocess_hash(), False)
        base = _start_measuring()
        _work(case, recipe.to_dict(), recipe.store.path, {})
    else:
        import cv2  # noqa: F401
        import nibabel  # noqa: F401

        base = _start_measuring()
        seed_preprocess(case.image, case.label, work)
    peak = _peak()
    shutil.rmtree(work)
    print(json.dumps({"base": base, "peak": peak}))


def bench_memory(data: Path) -> dict:
    out = {}
    for mode in ("lungseg", "seed"):
        result = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(data), mode],
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            check=True,
        )
        out[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- main


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 volumes, a smaller memory run")
    parser.add_argument("--cases", type=int, default=None, help="volumes (default 6, quick 2)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--memory-slices", type=int, default=None, help="default 600, quick 200")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=None, help="runs, best kept (default 2)")
    parser.add_argument("--reads", type=int, default=3000, help="random reads timed")
    parser.add_argument("--data", default=None, help="folder for the generated volumes (kept)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    cases = args.cases or (2 if args.quick else 6)
    memory_slices = args.memory_slices or (200 if args.quick else 600)
    repeat = args.repeat or (1 if args.quick else 2)

    data_root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="lungseg-bench-"))
    work = Path(tempfile.mkdtemp(prefix="lungseg-bench-work-"))
    try:
        print(
            f"lungseg preprocessing benchmark: {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at start"
        )
        data = make_data(data_root / "cases", cases, args.size, args.slices)
        big = make_data(data_root / "memory", 1, args.size, memory_slices)

        speed = bench_preprocess(data, work, args.workers, repeat)
        kept = args.slices - SEED_SKIP
        print(
            f"data: {cases} synthetic volumes {args.size}x{args.size}x{args.slices}, "
            f"{kept} slices kept of each, {speed['slices']} slices -> {SEED_SIZE}x{SEED_SIZE}"
        )
        ratio = speed["many"] / speed["seed"]
        print(
            f"(1) preprocessing   seed {speed['seed']:7.1f} slices/s | lungseg 1 worker "
            f"{speed['one']:7.1f} slices/s ({speed['one'] / speed['seed']:.2f}x) | "
            f"{args.workers} workers {speed['many']:7.1f} slices/s ({ratio:.2f}x)"
            f"   target >= 4x: {verdict(ratio >= 4)}"
        )

        reads = bench_reads(speed["seed_dir"], speed["store"], args.reads)
        ratio = reads["warm"] / reads["seed"]
        print(
            f"(2) random access   seed np.load {reads['seed']:7.0f} pairs/s | SliceDataset "
            f"{reads['warm']:7.0f} pairs/s ({ratio:.2f}x; first epoch, decoding every case: "
            f"{reads['cold']:.0f} pairs/s, {reads['cold'] / reads['seed']:.2f}x)"
            f"   target >= 2x: {verdict(ratio >= 2)}"
        )
        print(
            f"                    no cache (cache_bytes=0, one chunk a read, cases opened) "
            f"{reads['uncached']:7.0f} pairs/s ({reads['uncached'] / reads['seed']:.2f}x)"
        )

        seed_bytes, store_bytes = du(speed["seed_dir"]), du(speed["store"])
        ratio = store_bytes / seed_bytes
        print(
            f"(3) disk            seed {seed_bytes / 1e6:7.1f} MB | "
            f"store {store_bytes / 1e6:7.1f} MB"
            f" (1/{1 / ratio:.1f})   target <= 1/10: {verdict(ratio <= 0.1)}"
        )

        print("(4) image formats and compressors: benchmarks/bench_store_bytes.py")

        mem = bench_memory(big)
        volume = args.size * args.size * memory_slices
        ours, seed = mem["lungseg"], mem["seed"]
        ours_extra, seed_extra = ours["peak"] - ours["base"], seed["peak"] - seed["base"]
        print(
            f"(5) memory, one {args.size}x{args.size}x{memory_slices} int16 volume "
            f"(int16 {volume * 2 / 1e9:.2f} GB, float32 {volume * 4 / 1e9:.2f} GB): lungseg peak "
            f"RSS {ours['peak'] / 1e9:.2f} GB = {ours['base'] / 1e9:.2f} GB after imports "
            f"+ {ours_extra / 1e9:.2f} GB | seed peak {seed['peak'] / 1e9:.2f} GB = "
            f"{seed['base'] / 1e9:.2f} + {seed_extra / 1e9:.2f} GB "
            f"({seed_extra / max(ours_extra, 1):.1f}x lungseg's)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.data:
            shutil.rmtree(data_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
