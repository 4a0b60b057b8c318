"""Reading a sharded Zarr v3 array on a local disk without zarr-python: one chunk per slice.

zarr-python opens a shard, reads and checks its index and runs its codec pipeline on every
read, about 1 ms per slice; the slice itself decodes in under 0.1 ms.
:class:`ShardedArray` reads the array's ``zarr.json`` once, keeps each shard's index and an
open file, and serves a slice with one ``pread`` of that chunk's bytes and one Blosc decode.
It reads the same files zarr-python writes (Zarr v3 ``sharding_indexed``), and
:func:`open_local` declines (returns ``None``) anything it does not handle, so that the
caller falls back to zarr: fsspec URLs, other chunkings, codecs or byte orders.
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
from numcodecs import blosc

__all__ = ["ShardedArray", "is_local", "open_local"]

_MISSING = 2**64 - 1  # an index entry for a chunk that was never written (all fill value)
_DTYPES = {"int16", "uint8", "int32", "float16", "float32"}
#: Shard files a reader keeps open at once (least recently used closed first).
MAX_OPEN = 256


def is_local(path: str) -> bool:
    """Whether ``path`` is a local folder (no URL scheme, or ``file://``)."""
    return "://" not in path or path.startswith("file://")


def open_local(path: str | Path) -> ShardedArray | None:
    """The array at local folder ``path`` if :class:`ShardedArray` can read it, else ``None``.

    Handled: Zarr v3, a regular grid whose shards split only the first axis, one
    ``sharding_indexed`` codec with whole-plane inner chunks ``(1, ...)``, little-endian
    ``bytes`` with an optional ``blosc``, the index at the end (``bytes`` + ``crc32c``), the
    default chunk key encoding. Anything else, or no such file, gives ``None``.
    """
    path = str(path).removeprefix("file://")
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        return ShardedArray(path, meta)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


class ShardedArray:
    """Slices along the first axis of one sharded array, read chunk by chunk.

    Args:
        path: the array's folder.
        meta: its parsed ``zarr.json``.

    Raises:
        ValueError: a layout this reader does not handle (:func:`open_local` catches it).
    """

    def __init__(self, path: str, meta: dict) -> None:
        self.path = path
        self._open: OrderedDict[int, tuple[int, np.ndarray] | None] = OrderedDict()
        ok = meta["zarr_format"] == 3 and meta["node_type"] == "array"
        shape = tuple(meta["shape"])
        grid = meta["chunk_grid"]
        shard = tuple(grid["configuration"]["chunk_shape"])
        (codec,) = meta["codecs"]
        conf = codec["configuration"]
        inner = tuple(conf["chunk_shape"])
        keys = meta["chunk_key_encoding"]
        names = [c["name"] for c in conf["codecs"]]
        ok &= grid["name"] == "regular" and codec["name"] == "sharding_indexed"
        ok &= len(shape) >= 2 and shard[1:] == shape[1:] and inner == (1, *shape[1:])
        ok &= names in (["bytes"], ["bytes", "blosc"]) and meta["data_type"] in _DTYPES
        ok &= conf["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
        ok &= [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
        ok &= conf.get("index_location", "end") == "end" and sys.byteorder == "little"
        ok &= keys["name"] == "default" and not meta.get("storage_transformers")
        if not ok:
            raise ValueError(f"{path}: not a layout ShardedArray reads")
        self.shape = shape
        self.dtype = np.dtype(meta["data_type"])
        self.fill = meta["fill_value"]
        self.per_shard = shard[0]
        self.compressed = names[-1] == "blosc"
        self._sep = keys.get("configuration", {}).get("separator", "/")
        self._plane = self.dtype.itemsize * int(np.prod(shape[1:]))

    def read(self, start: int, stop: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Slices ``start:stop`` (or the listed ``rows``), stored dtype, ``(m, *shape[1:])``."""
        wanted = range(start, stop) if rows is None else [int(r) for r in rows]
        out = np.empty((len(wanted), *self.shape[1:]), self.dtype)
        for i, k in enumerate(wanted):
            if not 0 <= k < self.shape[0]:
                raise IndexError(f"{self.path}: slice {k} of {self.shape[0]}")
            self._read_chunk(k, out[i])
        return out

    def close(self) -> None:
        """Close every open shard file."""
        while self._open:
            _, entry = self._open.popitem()
            if entry is not None:
                os.close(entry[0])

    def __del__(self) -> None:
        self.close()

    def _read_chunk(self, k: int, out: np.ndarray) -> None:
        shard = self._shard(k // self.per_shard)
        if shard is None:
            out[...] = self.fill
            return
        fd, index = shard
        offset, nbytes = index[k % self.per_shard]
        if offset == _MISSING:
            out[...] = self.fill
            return
        data = os.pread(fd, int(nbytes), int(offset))
        if len(data) != nbytes:
            raise OSError(f"{self.path}: shard shorter than its index says (slice {k})")
        dest = out.reshape(-1).view(np.uint8)
        if self.compressed:
            _decompress(data, dest, self._plane)
        else:
            dest[:] = np.frombuffer(data, np.uint8)

    def _shard(self, s: int) -> tuple[int, np.ndarray] | None:
        """Shard ``s``'s open file and index ``(chunks, 2)`` of (offset, nbytes), or ``None``."""
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        key = self._sep.join(["c", str(s)] + ["0"] * (len(self.shape) - 1))
        try:
            fd = os.open(os.path.join(self.path, key), os.O_RDONLY)
        except FileNotFoundError:
            entry = None  # never written: every chunk is the fill value
        else:
            try:
                entry = fd, self._index(fd)
            except BaseException:
                os.close(fd)
                raise
        self._open[s] = entry
        while len(self._open) > MAX_OPEN:
            _, old = self._open.popitem(last=False)
            if old is not None:
                os.close(old[0])
        return entry

    def _index(self, fd: int) -> np.ndarray:
        size = 16 * self.per_shard + 4
        end = os.fstat(fd).st_size
        raw = os.pread(fd, size, end - size) if end >= size else b""
        if len(raw) != size or _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise OSError(f"{self.path}: a shard's index is damaged (checksum mismatch)")
        return np.frombuffer(raw[:-4], "<u8").reshape(self.per_shard, 2)


def _decompress(data: bytes, dest: np.ndarray, expected: int) -> None:
    """Blosc-decode ``data`` into ``dest`` in this thread (no Blosc thread pool: fork-safe)."""
    nbytes = int.from_bytes(data[4:8], "little")  # Blosc header: uncompressed size
    if nbytes != expected:
        raise OSError(f"a chunk decodes to {nbytes} bytes, expected {expected}")
    previous, blosc.use_threads = blosc.use_threads, False
    try:
        blosc.decompress(data, dest)
    finally:
        blosc.use_threads = previous


def _crc32c(data: bytes) -> int:
    import google_crc32c  # what zarr's crc32c codec uses

    return google_crc32c.value(data)
