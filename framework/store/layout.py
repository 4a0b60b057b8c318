"""The slice store's format: version, dtypes, codecs, and the helpers its reads share.

:mod:`lungseg.store.slices` documents the layout; this module holds what defines it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from lungseg.core.errors import DataError

FORMAT_VERSION = 1
IMAGE_DTYPE = np.float16


def _batched(chunks: int) -> Any:
    """Let zarr encode/decode all ``chunks`` of a case in one batch (about 2x faster).

    zarr's default handles one chunk at a time, which costs ~2 ms of Python a chunk.
    """
    return zarr.config.set({"codec_pipeline.batch_size": max(1, chunks)})


def _compressors() -> list:
    """Blosc zstd level 1, byte shuffle: chosen by ``benchmarks/bench_preprocess.py``.

    On float16 CT slices it encodes 2.5x faster than level 3 for 3.5 % more bytes, and byte
    shuffle beats bitshuffle on float16 (docs/store.md has the figures).
    """
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


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
