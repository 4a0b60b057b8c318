"""The Zarr v3 slice store: one group per case, ``image`` and ``mask`` as ``(slices, H, W)``.

Layout (readable with plain ``zarr``; docs/store.md has the details)::

    store.zarr/                      root attrs: format_version, preprocess_hash, preprocess
      <case id>/                     attrs: geometry, trace, kept_slices, preprocess,
                                            preprocess_hash, image_path, label_path, slices,
                                            complete
        image        float16 (n, H, W)   one slice per chunk, one shard per case
        mask         uint8   (n, H, W)   {0, 1}
        tumor_pixels int32   (n,)        tumour pixels per slice (samplers read only this)

A case is visible to readers only once ``complete`` is set, which is written last: a writer
killed mid-case leaves a group that readers skip and the next ``preprocess`` rewrites.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from lungseg.core.errors import DataError
from lungseg.core.recipe_sections import StoreConfig
from lungseg.store.cache import CaseCache, Pair
from lungseg.store.layout import (
    _batched,
    _check_version,
    _forget_listings,
)
from lungseg.store.writing import StoreWriting


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
        self._arrays: dict[str, tuple[zarr.Array, zarr.Array]] = {}  # handles, no data
        self._pid = os.getpid()  # handles opened by another process are not used

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

    def read_slices(self, case_id: str, start: int, stop: int) -> Pair:
        """Slices ``start:stop`` of a case, ``(image (m, H, W) float32, mask (m, H, W) uint8)``.

        Cached as :meth:`read_slice` is; uncached, the range is read in one batch (the
        neighbours of a slice for 2.5D context: about 3x faster than slice by slice).

        The arrays may be views of the cache: copy them before modifying them.

        Raises:
            DataError: no such complete case.
        """
        pair = self._cache.get(case_id)
        if pair is None:
            image, mask = self._handles(case_id)
            if not self._cache.fits(image.size * 4 + mask.size):
                with _batched(max(stop - start, 1)):
                    got = np.asarray(image[start:stop]).astype(np.float32)
                    return got, np.asarray(mask[start:stop])
            pair = self.read_case(case_id)
        return pair[0][start:stop], pair[1][start:stop]

    def read_case(self, case_id: str) -> Pair:
        """The whole case ``(image float32 (n, H, W), mask uint8 (n, H, W))``.

        Stored float16 is widened once here, not on every slice access (NumPy converts
        float16 at a few ns a value). A case that fits ``cache_bytes`` is kept; the least
        recently used cases are dropped to stay within the budget. The arrays may be the
        cache's own: copy them before modifying them.

        Raises:
            DataError: no such complete case.
        """
        pair = self._cache.get(case_id, touch=True)
        if pair is not None:
            return pair
        image, mask = self._handles(case_id)
        with _batched(image.shape[0]):
            pair = (np.asarray(image[:]).astype(np.float32), np.asarray(mask[:]))
        self._cache.put(case_id, pair)
        return pair

    def _handles(self, case_id: str) -> tuple[zarr.Array, zarr.Array]:
        """The case's ``image`` and ``mask`` arrays (metadata only), opened once."""
        self._forget_after_fork()
        if case_id not in self._arrays:
            group = self._group(case_id)
            self._arrays[case_id] = (group["image"], group["mask"])
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
