"""The Zarr v3 slice store: one group per case, ``image`` and ``mask`` as ``(slices, H, W)``.

Layout (readable with plain ``zarr``; docs/store.md has the details)::

    store.zarr/                      root attrs: format_version, preprocess_hash, preprocess
      <case id>/                     attrs: geometry, trace, kept_slices, preprocess,
                                            preprocess_hash, image_path, label_path, slices,
                                            complete
        image        int16   (n, H, W)   one slice per chunk, one shard per case; attrs
                                         scale, offset: value = offset + scale * stored
        mask         uint8   (n, H, W)   {0, 1}
        tumor_pixels int32   (n,)        tumour pixels per slice (samplers read only this)

A case is visible to readers only once ``complete`` is set, which is written last: a writer
killed mid-case leaves a group that readers skip and the next ``preprocess`` rewrites.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
import zarr

from lungseg.core.errors import DataError
from lungseg.core.recipe_sections import StoreConfig
from lungseg.store.cache import CaseCache, Pair
from lungseg.store.layout import (
    _batched,
    _check_version,
    _forget_listings,
    dequantise,
)
from lungseg.store.shardread import ShardedArray, is_local, open_local
from lungseg.store.writing import StoreWriting


class _CaseArrays(NamedTuple):
    """A case's open arrays: zarr's handles, and the local fast reader when it applies."""

    image: zarr.Array
    mask: zarr.Array
    scale: float
    offset: float
    fast: tuple[ShardedArray, ShardedArray] | None


class SliceStore(StoreWriting):
    """Read and write a slice store at a local path or an fsspec URL.

    Writing (:meth:`initialise`, :meth:`write_case`) lives in
    :class:`~lungseg.store.writing.StoreWriting`; this class opens the store and reads it.

    Args:
        path: local directory or URL (``s3://bucket/store.zarr``).
        storage_options: fsspec options for URLs (credentials, endpoint).
        cache_bytes: bytes of decoded cases kept in memory (float32 image and uint8 mask,
            5 bytes a pixel); 0 disables; default and check: ``store.cache_bytes`` of a
            recipe (:class:`~lungseg.core.recipe_sections.StoreConfig`). :meth:`read_case`
            evicts the least recently used cases, :meth:`read_slice` and :meth:`read_slices`
            admit cases while they fit and never evict (:class:`~lungseg.store.cache.CaseCache`).
            Each DataLoader worker holds its own cache, so the memory
            bound is ``cache_bytes * max(1, num_workers)`` per training process.

    Raises:
        RecipeError: ``cache_bytes`` is negative (a ``ValueError``).
    """

    def __init__(
        self,
        path: str,
        storage_options: dict[str, Any] | None = None,
        cache_bytes: int = StoreConfig.cache_bytes,
    ) -> None:
        config = StoreConfig(str(path), dict(storage_options or {}), cache_bytes)  # checks
        self.path = config.path
        self.storage_options = config.storage_options
        self.cache_bytes = config.cache_bytes
        self._cache = CaseCache(self.cache_bytes)
        self._root: zarr.Group | None = None
        self._arrays: dict[str, _CaseArrays] = {}  # handles, no data
        self._pid = os.getpid()  # handles opened by another process are not used
        #: read local stores straight from the shard files (False: always through zarr).
        self.fast_reads = True

    @classmethod
    def from_config(cls, config: StoreConfig) -> SliceStore:
        """The store a recipe's ``store:`` section (:class:`~lungseg.core.recipe.StoreConfig`)."""
        return cls(config.path, config.storage_options, config.cache_bytes)

    # ------------------------------------------------------------------ opening
    def _open(self, mode: str) -> zarr.Group:
        kwargs = {"storage_options": self.storage_options} if self.storage_options else {}
        try:
            return zarr.open_group(store=self.path, mode=mode, zarr_format=3, **kwargs)
        except FileNotFoundError as exc:
            raise DataError(
                f"{self.path}: no slice store here; run `lungseg preprocess RECIPE` first"
            ) from exc

    @property
    def root(self) -> zarr.Group:
        self._forget_after_fork()
        if self._root is None:
            root = self._open("r")
            _check_version(self.path, root.attrs.get("format_version"))
            self._root = root
        return self._root

    # ------------------------------------------------------------------ reading
    def cases(self) -> list[str]:
        """Ids of the complete cases, sorted (listed afresh: other processes write too)."""
        root = self.root
        _forget_listings(root)
        return sorted(name for name, group in root.groups() if group.attrs.get("complete") is True)

    def attrs(self, case_id: str) -> dict[str, Any]:
        return dict(self._group(case_id).attrs)

    def root_attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    def tumor_pixels(self, case_id: str) -> np.ndarray:
        return np.asarray(self._group(case_id)["tumor_pixels"][:])

    def read_slice(self, case_id: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``k`` of a case, ``(image (H, W) float32, mask (H, W) uint8)``: random access.

        A cached case answers from memory. Any other case is decoded whole and cached when
        it fits in what is left of the budget; when it does not, only slice ``k``'s chunks
        are read and nothing is evicted (:class:`~lungseg.store.cache.CaseCache` says why).

        The arrays may be views of the cache: copy them before modifying them.

        Raises:
            DataError: no such complete case.
        """
        image, mask = self.read_slices(case_id, k, k + 1)
        return image[0], mask[0]

    def read_slices(self, case_id: str, start: int, stop: int, copy: bool = False) -> Pair:
        """Slices ``start:stop`` of a case, ``(image (m, H, W) float32, mask (m, H, W) uint8)``.

        Cached as :meth:`read_slice` is; uncached, only the range's chunks are read: on a
        local disk straight from the shard files (:mod:`lungseg.store.shardread`, each
        shard's index read once), elsewhere through zarr in one batch.

        Args:
            case_id: the case.
            start: first slice.
            stop: one past the last slice.
            copy: return arrays the caller owns (copies of the cache's; reads from disk are
                not copied again). Without it the arrays may be views of the cache: copy them
                before modifying them.

        Raises:
            DataError: no such complete case.
        """
        pair = self._cache.get(case_id)
        if pair is None:
            arrays = self._handles(case_id)
            if not self._cache.fits(arrays.mask.size * 5):  # float32 image + uint8 mask
                return self._read(arrays, start, stop)
            pair = self.read_case(case_id)
        if copy:
            return pair[0][start:stop].copy(), pair[1][start:stop].copy()
        return pair[0][start:stop], pair[1][start:stop]

    def read_case(self, case_id: str) -> Pair:
        """The whole case ``(image float32 (n, H, W), mask uint8 (n, H, W))``.

        The stored int16 steps are turned into float32 values once here, not on every slice
        access. A case that fits ``cache_bytes`` is kept; the least recently used cases are
        dropped to stay within the budget. The arrays may be the cache's own: copy them
        before modifying them.

        Raises:
            DataError: no such complete case.
        """
        pair = self._cache.get(case_id, touch=True)
        if pair is not None:
            return pair
        arrays = self._handles(case_id)
        pair = self._read(arrays, 0, arrays.mask.shape[0])
        self._cache.put(case_id, pair)
        return pair

    @staticmethod
    def _read(arrays: _CaseArrays, start: int, stop: int) -> Pair:
        """Slices ``start:stop`` decoded: float32 image values and the uint8 mask."""
        if arrays.fast is not None:
            image, mask = arrays.fast[0].read(start, stop), arrays.fast[1].read(start, stop)
        else:
            with _batched(max(stop - start, 1)):
                image, mask = (
                    np.asarray(arrays.image[start:stop]),
                    np.asarray(arrays.mask[start:stop]),
                )
        return dequantise(image, arrays.scale, arrays.offset), mask

    def _handles(self, case_id: str) -> _CaseArrays:
        """The case's arrays (metadata only), opened once; the fast reader on a local disk."""
        self._forget_after_fork()
        if case_id not in self._arrays:
            group = self._group(case_id)
            image, mask = group["image"], group["mask"]
            fast = None
            if is_local(self.path) and self.fast_reads:
                where = os.path.join(self.path.removeprefix("file://"), case_id)
                pair = (
                    open_local(os.path.join(where, "image")),
                    open_local(os.path.join(where, "mask")),
                )
                fast = pair if None not in pair else None
            scale, offset = image.attrs.get("scale", 1.0), image.attrs.get("offset", 0.0)
            self._arrays[case_id] = _CaseArrays(image, mask, scale, offset, fast)
        return self._arrays[case_id]

    def _group(self, case_id: str) -> zarr.Group:
        try:
            group = self.root[case_id]
        except KeyError:
            raise DataError(
                f"{self.path}: no case {case_id!r}; run `lungseg preprocess` first"
            ) from None
        if group.attrs.get("complete") is not True:
            raise DataError(
                f"{self.path}: case {case_id!r} is incomplete; rerun `lungseg preprocess`"
            )
        return group

    def cached_bytes(self) -> int:
        """Bytes of decoded cases held by the cache now (at most ``cache_bytes``)."""
        return self._cache.nbytes

    def _forget_after_fork(self) -> None:
        """Drop the open handles in a forked process (a DataLoader worker).

        A forked worker inherits this object as it was, handles included, and those are
        bound to the parent's I/O event loop (object storage through s3fs fails with
        "attached to a different loop"): the child reopens the store itself.
        """
        if self._pid != os.getpid():
            self._root, self._arrays, self._pid = None, {}, os.getpid()

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open lazily
        state = dict(self.__dict__)
        state.update(_root=None, _cache=CaseCache(self.cache_bytes), _arrays={})
        return state
