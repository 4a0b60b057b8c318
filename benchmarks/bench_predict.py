"""Prediction time for one 512x512x300 synthetic CT on CPU, and where it goes.

Runs exactly the functions ``lungseg predict`` runs for a NIfTI input (read_image ->
Predictor.scan [chain forward, model, chain inverse, threshold] -> write_mask) with the
default chain (canonical, skip 30 slices, /3071, resize to 256x256) and an untrained UNet
(speed does not depend on the weights). Prints seconds per stage and the share of time
outside the model's forward pass (target: at most 25%).

    python benchmarks/bench_predict.py [--features 16,32,64,128] [--work DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lungseg.core.build import assemble
from lungseg.core.recipe import Component, Recipe
from lungseg.data.synth import make_case
from lungseg.data.volume import read_image, write_mask
from lungseg.inference.predictor import Predictor


def scan_path(work: Path) -> Path:
    """The benchmark volume, written once (``make_case(0, 512, 300, 30)``)."""
    path = work / "bench_512x512x300.nii.gz"
    if not path.is_file():
        image, _, affine = make_case(0, size=512, slices=300, abdomen_slices=30)
        work.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, affine), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="16,32,64,128", help="UNet encoder widths")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--work", default=Path(tempfile.gettempdir()) / "lungseg-bench")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    features = [int(f) for f in args.features.split(",")]
    parts = assemble(Recipe(model=Component("unet", {"features": features})))
    recipe = parts.recipe  # the default chain: canonical, skip-slices, normalize, resize
    predictor = Predictor(
        parts.model().eval(),
        parts.chain,
        threshold=recipe.evaluate.threshold,
        batch_size=args.batch_size,
        device="cpu",
    )
    path = scan_path(Path(args.work))
    out = Path(args.work) / "pred" / path.name

    timings = predictor.timings
    start = time.perf_counter()
    with timings.stage("read"):
        image, geometry = read_image(path)
    result = predictor.scan(image, geometry.affine, geometry.spacing)
    with timings.stage("write"):
        write_mask(out, result.mask, path)
    total = time.perf_counter() - start

    print(f"volume {geometry.shape}, UNet features {features}, batch {args.batch_size}, "
          f"CPU threads {torch.get_num_threads()}")  # fmt: skip
    for stage, seconds in timings.seconds.items():
        print(f"  {stage:<26} {seconds:8.2f} s  {100 * seconds / total:5.1f}%")
    model_s = timings.seconds["model"]
    print(f"total {total:.2f} s; model forward {model_s:.2f} s; "
          f"outside the model {total - model_s:.2f} s = {100 * (total - model_s) / total:.1f}% "
          "(target <= 25%)")  # fmt: skip
    assert np.asarray(nib.load(str(out)).dataobj).shape == geometry.shape


if __name__ == "__main__":
    main()
