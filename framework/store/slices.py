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

import fsspec
import numpy as np
import zarr

from lungseg.core.errors import DataError, OutputError
from lungseg.core.recipe_sections import StoreConfig
from lungseg.store.cache import CaseCache, Pair
from lungseg.store.layout import (
    FORMAT_VERSION,
    IMAGE_DTYPE,
    _batched,
    _check_version,
    _compressors,
    _forget_listings,
)


class SliceStore:
    """Read and write a slice store at a local path or an fsspec URL.

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

    def initialise(
        self, preprocess: list[dict[str, Any]], preprocess_hash: str, overwrite: bool
    ) -> None:
        """Create the store, or check that an existing one was made with the same chain.

        The path must be missing, empty, or a lungseg store (its root attributes say so):
        nothing else is ever written into, and only a lungseg store is ever deleted.

        Args:
            preprocess: the chain, as recorded in the root attributes.
            preprocess_hash: its hash; a store made with another chain is refused.
            overwrite: delete a lungseg store made with another chain (or an older format)
                and start afresh.

        Raises:
            OutputError: the path holds something that is not a lungseg store.
            DataError: the store holds data preprocessed differently or in another format
                version (use ``overwrite``).
        """
        state = self._state()
        if state == "foreign":
            raise OutputError(
                f"store.path {self.path} holds files that are not a lungseg slice store; "
                "lungseg never writes into or deletes them: point `store.path` at a new folder"
            )
        if state == "lungseg" and not overwrite:
            attrs = self.root_attrs()
            _check_version(self.path, attrs.get("format_version"), rebuild=True)
            found = attrs.get("preprocess_hash")
            if found != preprocess_hash:
                raise DataError(
                    f"{self.path}: made with a different preprocessing chain ({found} != "
                    f"{preprocess_hash}); point `store.path` at a new folder, or rerun with "
                    "`--overwrite` to delete this store and rebuild it"
                )
            return
        # A lungseg store (being replaced), or nothing yet: "w" may delete only those.
        root = self._open("w" if state == "lungseg" else "a")
        root.attrs.update(
            {
                "format_version": FORMAT_VERSION,
                "preprocess_hash": preprocess_hash,
                "preprocess": preprocess,
            }
        )
        self._root = root

    def _state(self) -> str:
        """``"missing"``, ``"empty"``, ``"lungseg"`` (a store of ours) or ``"foreign"``."""
        fs, where = fsspec.core.url_to_fs(self.path, **self.storage_options)
        if not fs.exists(where):
            return "missing"
        if fs.isfile(where):
            return "foreign"
        if not fs.ls(where, detail=False):
            return "empty"
        try:
            attrs = self._open("r").attrs
        except (DataError, ValueError, OSError, KeyError):
            return "foreign"
        return "lungseg" if "preprocess_hash" in attrs else "foreign"

    # ------------------------------------------------------------------ writing
    def write_case(
        self, case_id: str, image: np.ndarray, mask: np.ndarray | None, attrs: dict[str, Any]
    ) -> None:
        """Write one case; ``complete`` is set last, so a killed write is never visible.

        An existing group of that name (a complete case, or one a killed writer left) is
        replaced.

        Args:
            case_id: group name.
            image: ``(n, H, W)`` float array.
            mask: ``(n, H, W)`` {0, 1} array, or ``None`` (stored as zeros).
            attrs: geometry, trace, kept slices, recipe and source paths (JSON-ready).

        Raises:
            ValueError: ``image`` is not ``(n, H, W)`` or ``mask`` has another shape.
        """
        if image.ndim != 3 or (mask is not None and mask.shape != image.shape):
            raise ValueError(
                f"case {case_id!r}: image must be (n, H, W) and mask the same shape, got "
                f"{image.shape} and {None if mask is None else mask.shape}"
            )
        root = self._open("a")
        n, h, w = image.shape
        if mask is None:
            mask = np.zeros(image.shape, dtype=np.uint8)
        group = root.create_group(case_id, overwrite=True, attributes={"complete": False})
        for name, data, dtype in (("image", image, IMAGE_DTYPE), ("mask", mask, np.uint8)):
            arr = group.create_array(
                name,
                shape=(n, h, w),
                chunks=(1, h, w),
                shards=(n, h, w),
                dtype=dtype,
                compressors=_compressors(),
            )
            with _batched(n):
                arr[:] = data.astype(dtype, copy=False)
        counts = mask.reshape(n, -1).sum(axis=1, dtype=np.int64).astype(np.int32)
        group.create_array("tumor_pixels", shape=(n,), dtype=np.int32, chunks=(max(n, 1),))[:] = (
            counts
        )
        group.attrs.update({**attrs, "slices": n, "complete": True})  # last write: now visible

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
