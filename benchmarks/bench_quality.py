"""Segmentation quality on hard synthetic CT: the seed recipe, each change alone, the combination.

All recipes train side by side in one run with the same epoch budget on the same cases
(``lungseg synth --preset hard``: small and juxta-pleural nodules, several lesions, scans
without tumour, varying spacing), and are scored on held-out scans that no model, no
validation and no choice saw (the split's ``test`` cases), with ``lungseg evaluate --split
test``: per-case 3D Dice in each scan's own geometry.

    python benchmarks/bench_quality.py            # the full run (about an hour on 2 cores)
    python benchmarks/bench_quality.py --quick    # a smoke run of every variant (minutes)

Prints one row per recipe: per-case Dice mean and standard deviation over held-out scans with
tumour, lesion recall, false-positive lesions per held-out scan, training time; then the
combination's gain over the seed recipe against the 0.10 target.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lungseg.core.recipe import recipe_from_dict
from lungseg.data.synth import write_dataset
from lungseg.inference.evaluate import evaluate
from lungseg.preprocess.run import run_preprocess
from lungseg.training.train import train

TARGET_GAIN = 0.10


def base_recipe(data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The seed's recipe at reduced size: resize, UNet, BCE, Adam, tumour-weighted sampler."""
    n = args.train_cases + args.test_cases
    return {
        "name": "seed",
        "data": {"source": "folder", "root": str(data)},
        "store": {"path": str(work / "store-resize.zarr")},
        "output": str(work / "seed"),
        "preprocess": [
            {"name": "canonical"},
            {"name": "skip-slices", "count": args.abdomen_slices},
            {"name": "normalize", "divisor": 3071},
            {"name": "resize", "size": args.pixels},
        ],
        "split": {"val_fraction": 0.2, "test_fraction": args.test_cases / n, "seed": 0},
        "sampler": {"name": "tumor-weighted"},
        "model": {"name": "unet", "features": args.features},
        "loss": {"name": "bce"},
        "optimizer": {"lr": args.lr},
        "trainer": {
            "max_epochs": args.epochs,
            "batch_size": 16,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "loggers": ["csv"],
            "seed": 0,
        },
        "evaluate": {"save_predictions": False},
    }


def variants(base: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The seed recipe, each change alone, and all changes together."""
    # In-plane spacing in mm, on the lungs' bounding box: reads Hounsfield units, so it comes
    # before normalize.
    resample = {"name": "resample", "spacing": args.spacing, "size": args.pixels, "lungs": True}

    def changed(name: str, **edits: Any) -> dict[str, Any]:
        recipe = copy.deepcopy(base)
        recipe["name"], recipe["output"] = name, str(work / name)
        for key, value in edits.items():
            section, _, field = key.partition("__")
            if field:
                recipe[section][field] = value
            else:
                recipe[section] = value
        if any(step["name"] == "resample" for step in recipe["preprocess"]):
            recipe["store"] = {"path": str(work / "store-resample.zarr")}
        return recipe

    chain = [*base["preprocess"][:2], resample, base["preprocess"][2]]
    return {
        "seed": changed("seed"),
        "dice-bce loss": changed("loss", loss={"name": "dice-bce"}),
        "2.5D context (K=2)": changed("context", data__context=2),
        "resample (mm spacing, lung box)": changed("resample", preprocess=chain),
        "combination": changed(
            "combination", loss={"name": "dice-bce"}, data__context=2, preprocess=chain
        ),
    }


def score(metrics: dict[str, Any]) -> dict[str, float]:
    """Held-out figures from ``metrics.json``."""
    rows = metrics["per_case"]
    tumour = [r["dice"] for r in rows if r["tumour_voxels"] > 0]
    dice = [0.0 if d is None else d for d in tumour]
    recall = [r["lesion-recall"] for r in rows if r["tumour_voxels"] > 0]
    return {
        "dice_mean": statistics.fmean(dice),
        "dice_std": statistics.pstdev(dice),
        "lesion_recall": statistics.fmean(0.0 if v is None else v for v in recall),
        "fp_lesions": statistics.fmean(r["fp-lesions"] or 0.0 for r in rows),
        "cases": len(rows),
        "with_tumour": len(tumour),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 epoch: a smoke run")
    parser.add_argument("--train-cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="in-plane voxels of the scans")
    parser.add_argument("--slices", type=int, default=56)
    parser.add_argument("--abdomen-slices", type=int, default=12)
    parser.add_argument("--pixels", type=int, default=96, help="slice size after preprocessing")
    parser.add_argument("--spacing", type=float, default=3.2, help="resample: mm per pixel")
    parser.add_argument("--features", type=lambda s: [int(x) for x in s.split(",")],
                        default=[16, 32, 64, 128])  # fmt: skip
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--only", nargs="*", help="run only these variants (names as printed)")
    parser.add_argument("--work", type=Path, default=None, help="kept when given")
    args = parser.parse_args()
    if args.quick:
        args.train_cases, args.test_cases, args.size, args.slices = 6, 2, 48, 28
        args.abdomen_slices, args.pixels, args.epochs, args.features = 6, 32, 1, [4, 8]
        args.spacing = 10.0
    work = args.work or Path(tempfile.mkdtemp(prefix="lungseg-quality-"))
    data = work / "data"
    if not (data / "dataset.json").is_file():
        write_dataset(
            data,
            cases=args.train_cases + args.test_cases,
            seed=0,
            size=args.size,
            slices=args.slices,
            abdomen_slices=args.abdomen_slices,
            test_cases=0,
            preset="hard",
        )
    results: dict[str, dict[str, float]] = {}
    for name, raw in variants(base_recipe(data, work, args), work, args).items():
        if args.only and name not in args.only:
            continue
        recipe = recipe_from_dict(raw, source=f"bench_quality:{name}")
        run_preprocess(recipe, progress=False)
        start = time.perf_counter()
        result = train(recipe, overwrite=True)  # replaces only an earlier run's checkpoints
        seconds = time.perf_counter() - start
        metrics = evaluate(recipe, result.best, "test", figures=False, overwrite=True)
        results[name] = {**score(metrics), "train_s": seconds}
        print(f"done {name}: {json.dumps(results[name])}", flush=True)

    print(f"\nhard preset: {args.train_cases} training+validation scans, {args.test_cases} "
          f"held-out; {args.size}x{args.size}x{args.slices} voxels, {args.pixels} px slices, "
          f"UNet {args.features}, {args.epochs} epochs, lr {args.lr}; work {work}")  # fmt: skip
    header = "| recipe | per-case Dice (mean ± sd) | lesion recall | FP lesions/scan | train s |"
    print(header + "\n| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        row = f"| {name} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | {r['lesion_recall']:.3f}"
        print(f"{row} | {r['fp_lesions']:.2f} | {r['train_s']:.0f} |")
    if "seed" in results and "combination" in results:
        gain = results["combination"]["dice_mean"] - results["seed"]["dice_mean"]
        verdict = "met" if gain >= TARGET_GAIN else "NOT met"
        print(f"combination - seed: {gain:+.3f} mean per-case Dice (target >= +{TARGET_GAIN}: "
              f"{verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
