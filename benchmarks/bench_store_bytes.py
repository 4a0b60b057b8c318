"""The slice store's bytes on disk and read speed on CT with realistic noise, per format option.

Scans are ``lungseg.data.synth`` 512x512 chest CT (int16 HU, 10-20 HU of white noise) with
spatially correlated noise added (``--noise`` HU, default 30: routine-dose chest CT with a
standard kernel is 10-40 HU), and the shared real CT when it is there
(``--real``, default ``../shared/data/real-ct/abdomen_ct.nii.gz``; skipped when absent). Every
scan goes through the seed's chain (skip 30 slices, HU / 3071, ``cv2.resize`` to 256x256) once,
then:

- the seed's bytes: one float64 ``.npy`` per image and mask slice, as the seed writes them;
- the store's bytes (``du`` of a real store written by ``SliceStore.write_case``) and its
  uncached random (image, mask) reads/s through the fast path, against ``np.load`` pairs;
- per image format option: bytes relative to the seed (masks included, as stored), encode and
  decode ms per slice (one thread), max abs error in normalised units and in HU.

Usage::

    python benchmarks/bench_store_bytes.py [--quick] [--noise 30] [--cases 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared/data/real-ct/abdomen_ct.nii.gz"
DIVISOR, SKIP, SIZE = 3071.0, 30, 256


def noisy_scans(cases: int, slices: int, noise: float) -> list[np.ndarray]:
    """int16 HU volumes (X, Y, Z) with correlated noise of ``noise`` HU added."""
    from scipy.ndimage import gaussian_filter

    from lungseg.data.synth import make_case

    scans = []
    for i in range(cases):
        image, _, _ = make_case(i, size=512, slices=slices, abdomen_slices=SKIP)
        rng = np.random.default_rng(100 + i)
        extra = gaussian_filter(rng.standard_normal(image.shape, np.float32), (0.7, 0.7, 0))
        extra *= noise / extra.std()
        scans.append(np.rint(np.clip(image + extra, -1024, 3071)).astype(np.int16))
    return scans


def seed_chain(scan: np.ndarray, skip: int = SKIP) -> np.ndarray:
    """The seed's slices: ``(n, 256, 256)`` float32 of HU / 3071 (the seed keeps float64)."""
    import cv2

    volume = scan[:, :, skip:].astype(np.float32) / DIVISOR
    return np.stack([cv2.resize(volume[:, :, k], (SIZE, SIZE)) for k in range(volume.shape[2])])


def options():
    """``(name, encode(image) -> (stored, decode), numcodecs codec)`` per format option."""
    from numcodecs import Blosc

    from lungseg.store import layout

    def quantised(levels):
        def encode(image):
            saved, layout.LEVELS = layout.LEVELS, levels
            try:
                stored, so = layout.quantise(image)
            finally:
                layout.LEVELS = saved
            return stored, lambda s: layout.dequantise(s, so["scale"], so["offset"])

        return encode

    def f16(image):
        return image.astype(np.float16), lambda s: s.astype(np.float32)

    shuffle, bitshuffle = Blosc.SHUFFLE, Blosc.BITSHUFFLE
    return [
        ("float16, zstd-1 shuffle (format 1)", f16, Blosc("zstd", 1, shuffle)),
        ("float16, zstd-3 shuffle", f16, Blosc("zstd", 3, shuffle)),
        ("float16, lz4hc-1 shuffle", f16, Blosc("lz4hc", 1, shuffle)),
        ("int16 13-bit, zstd-1 shuffle", quantised(8191), Blosc("zstd", 1, shuffle)),
        ("int16 13-bit, lz4hc-1 shuffle", quantised(8191), Blosc("lz4hc", 1, shuffle)),
        ("int16 12-bit, zstd-1 shuffle", quantised(4095), Blosc("zstd", 1, shuffle)),
        ("int16 12-bit, zstd-1 bitshuffle", quantised(4095), Blosc("zstd", 1, bitshuffle)),
        ("int16 12-bit, lz4 shuffle", quantised(4095), Blosc("lz4", 5, shuffle)),
        ("int16 12-bit, lz4hc-1 shuffle (chosen)", quantised(4095), Blosc("lz4hc", 1, shuffle)),
        ("int16 12-bit, lz4hc-5 shuffle", quantised(4095), Blosc("lz4hc", 5, shuffle)),
    ]


def compare(volumes: list[np.ndarray], seed_bytes: int, mask_bytes: int) -> list[tuple]:
    """Per option: bytes / seed's, encode and decode ms per slice, max error (normalised)."""
    from numcodecs import blosc

    use_threads, blosc.use_threads = blosc.use_threads, False
    rows = []
    try:
        for name, encode, codec in options():
            size, enc, dec, error, slices = mask_bytes, 0.0, 0.0, 0.0, 0
            for image in volumes:
                stored, decode = encode(image)
                error = max(error, float(np.abs(decode(stored) - image).max()))
                best_enc = best_dec = float("inf")
                for _ in range(3):  # best of 3: the machine is shared
                    t = time.perf_counter()
                    chunks = [codec.encode(np.ascontiguousarray(c)) for c in stored]
                    best_enc = min(best_enc, time.perf_counter() - t)
                    out = np.empty_like(stored[0])
                    t = time.perf_counter()
                    for c in chunks:
                        blosc.decompress(c, out)
                    best_dec = min(best_dec, time.perf_counter() - t)
                enc, dec = enc + best_enc, dec + best_dec
                size += sum(len(c) for c in chunks)
                slices += len(stored)
            rows.append((name, size / seed_bytes, enc / slices * 1e3, dec / slices * 1e3, error))
    finally:
        blosc.use_threads = use_threads
    return rows


def measure(label: str, volumes: list[np.ndarray], masks: list[np.ndarray], work: Path) -> None:
    """Write both ways, print bytes, uncached read speed and the option table."""
    from lungseg.store.slices import SliceStore

    work.mkdir(parents=True)
    store = SliceStore(str(work / "store.zarr"), cache_bytes=0)
    store.initialise([], "bench", overwrite=False)
    pairs = []
    for i, (image, mask) in enumerate(zip(volumes, masks, strict=True)):
        store.write_case(f"case_{i}", image, mask, {})
        for k in range(len(image)):
            paths = work / f"seed/{i}/data/{k}.npy", work / f"seed/{i}/masks/{k}.npy"
            for path, plane in zip(paths, (image[k], mask[k]), strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, plane.astype(np.float64))
            pairs.append(((f"case_{i}", k), paths))
    seed_bytes = sum(p.stat().st_size for p in (work / "seed").rglob("*.npy"))
    store_files = [p for p in (work / "store.zarr").rglob("*") if p.is_file()]
    store_bytes = sum(p.stat().st_size for p in store_files)
    mask_bytes = sum(p.stat().st_size for p in store_files if "/mask/" in str(p))
    slices = len(pairs)
    print(f"{label}: {slices} slices {SIZE}x{SIZE}")
    ratio = store_bytes / seed_bytes
    print(
        f"  bytes: seed {seed_bytes / 1e6:.1f} MB | store {store_bytes / 1e6:.1f} MB = "
        f"{ratio:.3f} of the seed's (1/{1 / ratio:.1f})   target <= 1/10: "
        f"{'met' if ratio <= 0.1 else 'missed'}"
    )
    order = np.random.default_rng(0).integers(0, slices, min(3000, 10 * slices))
    t = time.perf_counter()
    for i in order:
        _, (image_path, mask_path) = pairs[i]
        np.load(image_path).astype(np.float32), np.load(mask_path).astype(np.float32)
    seed_rate = len(order) / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in order:
        store.read_slice(*pairs[i][0])
    ours = len(order) / (time.perf_counter() - t)
    print(
        f"  uncached random reads: seed np.load {seed_rate:.0f} pairs/s | store "
        f"{ours:.0f} pairs/s ({ours / seed_rate:.2f}x)"
    )
    print(
        f"  {'image format':40s} {'of seed':>8s} {'enc ms':>7s} {'dec ms':>7s} {'max err':>9s} HU"
    )
    for name, rel, enc, dec, err in compare(volumes, seed_bytes, mask_bytes):
        print(f"  {name:40s} {rel:8.4f} {enc:7.3f} {dec:7.3f} {err:9.2e} {err * DIVISOR:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 scan of 80 slices")
    parser.add_argument("--cases", type=int, default=None, help="default 3, quick 1")
    parser.add_argument("--slices", type=int, default=None, help="default 120, quick 80")
    parser.add_argument("--noise", type=float, default=30.0, help="correlated noise, HU")
    parser.add_argument("--real", default=str(REAL), help="a real CT NIfTI (skipped if absent)")
    args = parser.parse_args(argv)
    import nibabel as nib

    cases, slices = (
        args.cases or (1 if args.quick else 3),
        args.slices or (80 if args.quick else 120),
    )
    work = Path(tempfile.mkdtemp(prefix="lungseg-bytes-"))
    try:
        scans = noisy_scans(cases, slices, args.noise)
        volumes = [seed_chain(s) for s in scans]
        masks = [np.zeros(v.shape, np.uint8) for v in volumes]
        for i, v in enumerate(volumes):  # a tumour-like blob on a few slices
            masks[i][len(v) // 3 : len(v) // 2, 100:130, 90:125] = 1
        label = f"synthetic CT 512x512x{slices} x {cases}, + {args.noise:g} HU correlated noise"
        measure(label, volumes, masks, work / "synthetic")
        if Path(args.real).is_file():
            real = np.asarray(nib.load(args.real).dataobj).astype(np.int16)
            volume = seed_chain(real, skip=0)
            mask = np.zeros(volume.shape, np.uint8)
            measure(f"real CT {Path(args.real).name} {real.shape}", [volume], [mask], work / "real")
        else:
            print(f"real CT: {args.real} not found, skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
