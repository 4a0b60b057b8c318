"""Prediction time for one 512x512x300 synthetic CT, where it goes, and against the previous path.

Runs exactly the functions ``lungseg predict`` runs for a NIfTI input (read_image ->
Predictor.scan [chain forward, model, chain inverse, threshold] -> write_mask) with the
default chain (canonical, skip 30 slices, /3071, resize to 256x256) and an untrained UNet
(speed does not depend on the weights). Prints seconds per stage and the time outside the
network (target: at most 8 s on the development machine).

Then, on the same prediction and under the same load, it times the previous inverse
(per-slice resize into the store's layout, a C-ordered zero volume, a contiguous copy of the
reoriented result) and the previous writer (``nibabel.save``: zlib level 1) and prints both
side by side, with the number of mask voxels on which they differ, the time to write a
``.nii`` instead, and an estimate of the share outside the network with the network on a GPU.

    python benchmarks/bench_predict.py [--features 16,32,64,128] [--device cpu|cuda]
        [--work DIR] [--threads N] [--repeat 3] [--gpu-tflops 396]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import torch
from nibabel import orientations as ornt
from torch.utils.flop_counter import FlopCounterMode

from lungseg.core.build import assemble
from lungseg.core.recipe import Component, Recipe
from lungseg.data.synth import make_case
from lungseg.data.volume import Volume, read_image, write_mask, write_nifti
from lungseg.inference.predictor import Predictor
from lungseg.plugins.preprocessing import _resize


def scan_path(work: Path) -> tuple[Path, Path]:
    """The benchmark volume and its tumour label, written once (``make_case(0, 512, 300, 30)``)."""
    path = work / "bench_512x512x300.nii.gz"
    label = work / "bench_512x512x300_label.nii.gz"
    if not (path.is_file() and label.is_file()):
        image, mask, affine = make_case(0, size=512, slices=300, abdomen_slices=30)
        work.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, affine), str(path))
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(label))
    return path, label


def previous_invert(slice_probs: np.ndarray, trace: list[dict]) -> np.ndarray:
    """The default chain's inverse as it was: per slice into (Z, X, Y), zeros, a C copy."""
    steps = {t["step"]: t for t in trace}
    in_plane = tuple(steps["resize"]["in_plane"])
    back = _resize(np.moveaxis(slice_probs, 0, 2), in_plane, cv2.INTER_LINEAR)
    crop = steps["skip-slices"]
    full = np.zeros((*back.shape[:2], crop["depth"]), dtype=back.dtype)
    full[:, :, crop["start"] : crop["stop"]] = back
    original = np.asarray(steps["canonical"]["ornt"])
    if np.array_equal(original, ornt.axcodes2ornt("RAS")):
        return full
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), original)
    return np.ascontiguousarray(ornt.apply_orientation(full, transform))


def previous_write(path: Path, array: np.ndarray, reference: Path) -> None:
    """``write_nifti`` as it was: the reference's header, ``nibabel.save`` (zlib level 1)."""
    header = nib.load(str(reference)).header.copy()
    header.set_data_dtype(array.dtype)
    header["scl_slope"], header["scl_inter"] = 1, 0
    nib.save(nib.Nifti1Image(array, nib.load(str(reference)).affine, header), str(path))


def forward_flops(features: list[int]) -> float:
    """FLOPs of one UNet forward pass on one 256x256 slice (counted, on the CPU)."""
    model = assemble(Recipe(model=Component("unet", {"features": features}))).model().eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 1, 256, 256))
    return float(counter.get_total_flops())


def timed(fn, *args) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="16,32,64,128", help="UNet encoder widths")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="where the network runs (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--work", default=Path(tempfile.gettempdir()) / "lungseg-bench")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side-by-side")
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=0.4 * 989,
        help="network TFLOP/s assumed for the GPU estimate (default: 40%% of an H100/H200's "
        "989 bf16 TFLOP/s, the goal of bench_gpu.py)",
    )
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
        device=args.device,
    )
    work = Path(args.work)
    path, label_path = scan_path(work)
    out = work / "pred" / path.name

    timings = predictor.timings
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with timings.stage("read"):
        image, geometry = read_image(path)
    result = predictor.scan(image, geometry.affine, geometry.spacing)
    with timings.stage("write"):
        write_mask(out, result.mask, path)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - start

    print(f"volume {geometry.shape}, UNet features {features}, batch {args.batch_size}, "
          f"device {args.device}, CPU threads {torch.get_num_threads()}, "
          f"load average {load:.1f}")  # fmt: skip
    for stage, seconds in timings.seconds.items():
        print(f"  {stage:<26} {seconds:8.2f} s  {100 * seconds / total:5.1f}%")
    model_s = timings.seconds["model"]
    outside = total - model_s
    print(f"total {total:.2f} s; model forward {model_s:.2f} s; "
          f"outside the model {outside:.2f} s = {100 * outside / total:.1f}% "
          "(target: at most 8 s)")  # fmt: skip
    assert np.asarray(nib.load(str(out)).dataobj).shape == geometry.shape

    # the previous inverse and writer against the current ones, on the same prediction,
    # alternated and best of --repeat, so that load from other jobs falls on both alike
    _, trace = predictor.chain.forward(Volume(image, None, geometry.affine))
    grid = np.moveaxis(result.slice_probs, 0, 2)
    pred = work / "pred"
    back = previous_invert(result.slice_probs, trace)
    old_mask = (back >= predictor.threshold).astype(np.uint8)
    # an untrained network's mask is nearly uniform: also a real tumour mask, in each
    # writer's layout, and probabilities as a trained network gives them (the label, blurred)
    label = np.asarray(nib.load(str(label_path)).dataobj)
    label_c, label_f = np.ascontiguousarray(label), np.asfortranarray(label)
    blur = [cv2.GaussianBlur(np.float32(label[:, :, k]), (0, 0), 3) for k in range(label.shape[2])]
    probs_c = np.stack(blur, axis=2)  # C order, as the previous inverse gave
    probs_f = np.asfortranarray(probs_c)
    runs = {
        "invert": (
            lambda: previous_invert(result.slice_probs, trace),
            lambda: predictor.chain.invert(grid, trace, is_label=False, device=args.device),
        ),
        "write .nii.gz": (
            lambda: previous_write(pred / "previous.nii.gz", old_mask, path),
            lambda: write_mask(pred / "now.nii.gz", result.mask, path),
        ),
        "write a tumour mask": (
            lambda: previous_write(pred / "previous_label.nii.gz", label_c, path),
            lambda: write_mask(pred / "now_label.nii.gz", label_f, path),
        ),
        "write probabilities": (
            lambda: previous_write(pred / "previous_prob.nii.gz", probs_c, path),
            lambda: write_nifti(pred / "now_prob.nii.gz", probs_f, reference=path),
        ),
    }
    best = {key: [float("inf"), float("inf")] for key in runs}
    for _ in range(args.repeat):
        for key, fns in runs.items():
            for i, fn in enumerate(fns):
                best[key][i] = min(best[key][i], timed(fn)[1])
    raw = min(timed(write_mask, pred / "mask.nii", result.mask, path)[1] for _ in range(2))
    print(f"\nprevious path vs now, same prediction, best of {args.repeat} "
          f"(load average {os.getloadavg()[0]:.1f}):")  # fmt: skip
    for key, (old_s, new_s) in best.items():
        print(f"  {key:<26} {old_s:8.2f} s  -> {new_s:6.2f} s  (x{old_s / new_s:.1f})")
    print(f"  {'write .nii (uncompressed)':<26} {'':>10}     {raw:6.2f} s")
    fixed = sum(timings.seconds[k] for k in ("read", "forward chain", "threshold + postprocess"))
    old_out, new_out = (fixed + best["invert"][i] + best["write a tumour mask"][i] for i in (0, 1))
    print(f"  {'outside the model':<26} {old_out:8.2f} s  -> {new_out:6.2f} s  "
          "(read, forward chain, threshold as above; invert; write a tumour mask)")  # fmt: skip
    differ = int((old_mask != result.mask).sum())
    print(f"  mask voxels that differ: {differ} of {old_mask.size}; "
          f"max probability difference {np.abs(back - result.probs).max():.2e}")  # fmt: skip

    # the share outside the network with the network on a GPU: an estimate
    n = len(result.slice_probs)
    for label, widths in (("this UNet", features), ("seed UNet 64-512", [64, 128, 256, 512])):
        flops = forward_flops(widths)
        gpu_s = n * flops / (args.gpu_tflops * 1e12)
        print(f"estimate, {label} on a GPU at {args.gpu_tflops:.0f} TFLOP/s "
              f"({flops / 1e9:.1f} GFLOP a slice, {n} slices): network {gpu_s:.3f} s, "
              f"outside {outside:.2f} s = {100 * outside / (outside + gpu_s):.0f}% "
              "(an estimate, not a measurement)")  # fmt: skip


if __name__ == "__main__":
    main()
