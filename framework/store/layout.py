"""The slice store's format: version, dtypes, codecs, and the helpers its reads share.

:mod:`lungseg.store.slices` documents the layout; this module holds what defines it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from lungseg.core.errors import DataError

#: 2: images quantised to int16 (:func:`quantise`); 1 stored float16.
FORMAT_VERSION = 2
IMAGE_DTYPE = np.int16
#: Most quantisation levels a case's image uses (12 bits): the step is the smallest power of
#: two at which the case's range fits in ``LEVELS`` steps.
LEVELS = 4095


def _batched(chunks: int) -> Any:
    """Let zarr encode/decode all ``chunks`` of a case in one batch (about 2x faster).

    zarr's default handles one chunk at a time, which costs ~2 ms of Python a chunk.
    """
    return zarr.config.set({"codec_pipeline.batch_size": max(1, chunks)})


def _compressors() -> list:
    """Blosc LZ4HC level 1, byte shuffle: chosen by ``benchmarks/bench_preprocess.py``.

    On quantised int16 CT slices it decodes about 10x faster than zstd level 1 (random
    reads decode one slice each) for a few per cent more bytes, and encodes as fast
    (docs/store.md has the figures).
    """
    return [BloscCodec(cname="lz4hc", clevel=1, shuffle="shuffle")]


def quantise(image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The image as int16 steps above its minimum, and how to get the values back.

    The step is a power of two, the smallest at which the image's range fits in
    :data:`LEVELS` steps, so the error is at most half a step, at most
    ``(max - min) / (2 * LEVELS)`` (values on the step's grid, such as small integers, come
    back exactly). For the seed's chain (HU / 3071) on a scan spanning -1024 to 3071 HU the
    step is 2**-11 (1.5 HU): at most 0.75 HU of error.

    Args:
        image: float array, finite.

    Returns:
        ``(stored int16, {"scale": step, "offset": minimum})``; :func:`dequantise` inverts.

    Raises:
        ValueError: the image holds NaN or infinite values.
    """
    lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("image values must be finite to be stored")
    span = hi - lo
    step = 2.0 ** int(np.ceil(np.log2(span / LEVELS))) if span > 0 else 1.0
    out = np.empty(image.shape, np.float32)
    np.subtract(image, np.float32(lo), out=out, casting="unsafe")
    np.multiply(out, np.float32(1 / step), out=out)
    return np.rint(out, out=out).astype(IMAGE_DTYPE), {"scale": step, "offset": lo}


def dequantise(stored: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """float32 values of stored int16 steps: ``offset + scale * stored``."""
    out = np.multiply(stored, np.float32(scale), dtype=np.float32)
    out += np.float32(offset)
    return out


def context_indices(start: int, stop: int, n: int, context: int) -> np.ndarray:
    """The slices that feed centres ``start:stop`` of an ``n``-slice case with 2.5D context.

    Row ``i`` lists slices ``start + i - context`` to ``start + i + context``, clipped to
    ``0 .. n - 1``: the end slices of the kept range are repeated, and a window never
    reaches another case. Training (:class:`~lungseg.training.dataset.SliceDataset`) and
    prediction (:func:`~lungseg.inference.predictor.predict_probs`) both stack with it.

    Args:
        start: first centre slice.
        stop: one past the last centre slice.
        n: slices of the case.
        context: ``data.context``, K slices on each side.

    Returns:
        int64 ``(stop - start, 2 * context + 1)``; column ``context`` is the centre.
    """
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(start, stop)[:, None] + offsets, 0, max(n - 1, 0))


def _forget_listings(root: zarr.Group) -> None:
    """Drop fsspec's directory-listing cache (s3fs keeps one per filesystem instance).

    Worker processes and other shards add cases behind this process's back; a cached
    listing would hide them (or show deleted ones).
    """
    fs = getattr(root.store, "fs", None)
    if fs is not None and hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()


def _check_version(path: str, found: Any, rebuild: bool = False) -> None:
    """Refuse a store written in another format version, saying how to fix it."""
    if found is None or found == FORMAT_VERSION:
        return
    fix = (
        "rerun `lungseg preprocess --overwrite` to rebuild it"
        if rebuild
        else "rebuild it with `lungseg preprocess --overwrite`"
    )
    raise DataError(
        f"{path}: store format version {found}, this lungseg reads version {FORMAT_VERSION}; {fix}"
    )
