"""The Zarr v3 slice store: one group per case, ``image`` and ``mask`` as ``(slices, H, W)``.

Layout (readable with plain ``zarr``)::

    store.zarr/                      root attrs: format_version, preprocess_hash, preprocess
      <case id>/                     attrs: geometry, trace, image_path, label_path, complete
        image        float16 (n, H, W)   one slice per chunk, one shard per case
        mask         uint8   (n, H, W)   {0, 1}
        tumor_pixels int32   (n,)        tumour pixels per slice (samplers read only this)

A case is visible to readers only once ``complete`` is set, which is written last.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from lungseg.errors import DataError

FORMAT_VERSION = 1
IMAGE_DTYPE = np.float16


def _compressors() -> list:
    return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]


class SliceStore:
    """Read and write a slice store at a local path or an fsspec URL.

    Args:
        path: local directory or URL (``s3://bucket/store.zarr``).
        storage_options: fsspec options for URLs (credentials, endpoint).
        cache_bytes: decoded cases kept in memory for random access (LRU); 0 disables.
    """

    def __init__(
        self,
        path: str,
        storage_options: dict[str, Any] | None = None,
        cache_bytes: int = 2 * 1024**3,
    ) -> None:
        self.path = str(path)
        self.storage_options = dict(storage_options or {})
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached = 0
        self._root: zarr.Group | None = None

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
        if self._root is None:
            self._root = self._open("r")
        return self._root

    def initialise(
        self, preprocess: list[dict[str, Any]], preprocess_hash: str, overwrite: bool
    ) -> None:
        """Create the store, or check that an existing one was made with the same chain.

        Raises:
            DataError: the store holds data preprocessed differently (use ``overwrite``).
        """
        root = self._open("w" if overwrite else "a")
        found = root.attrs.get("preprocess_hash")
        if found is None and list(root.group_keys()):
            raise DataError(f"{self.path}: not a lungseg store; choose another `store.path`")
        if found is not None and found != preprocess_hash:
            raise DataError(
                f"{self.path}: made with a different preprocessing chain ({found} != "
                f"{preprocess_hash}); rerun with `--overwrite` to rebuild it"
            )
        if found is None:
            root.attrs.update(
                {
                    "format_version": FORMAT_VERSION,
                    "preprocess_hash": preprocess_hash,
                    "preprocess": preprocess,
                }
            )
        self._root = root

    # ------------------------------------------------------------------ writing
    def write_case(
        self, case_id: str, image: np.ndarray, mask: np.ndarray | None, attrs: dict[str, Any]
    ) -> None:
        """Write one case; ``complete`` is set last, so a killed write is never visible.

        Args:
            case_id: group name.
            image: ``(n, H, W)`` float array.
            mask: ``(n, H, W)`` {0, 1} array, or ``None`` (stored as zeros).
            attrs: geometry, trace and source paths (JSON-ready).
        """
        root = self._open("a")
        n, h, w = image.shape
        if mask is None:
            mask = np.zeros(image.shape, dtype=np.uint8)
        group = root.create_group(case_id, overwrite=True)
        for name, data, dtype in (("image", image, IMAGE_DTYPE), ("mask", mask, np.uint8)):
            arr = group.create_array(
                name,
                shape=(n, h, w),
                chunks=(1, h, w),
                shards=(n, h, w),
                dtype=dtype,
                compressors=_compressors(),
            )
            arr[:] = data.astype(dtype, copy=False)
        counts = mask.reshape(n, -1).sum(axis=1, dtype=np.int64).astype(np.int32)
        group.create_array("tumor_pixels", shape=(n,), dtype=np.int32, chunks=(max(n, 1),))[:] = (
            counts
        )
        group.attrs.update({**attrs, "slices": n, "complete": False})
        group.attrs["complete"] = True

    # ------------------------------------------------------------------ reading
    def cases(self) -> list[str]:
        """Ids of the complete cases, sorted."""
        root = self.root
        return sorted(name for name, group in root.groups() if group.attrs.get("complete") is True)

    def is_complete(self, case_id: str) -> bool:
        try:
            return self._open("r")[case_id].attrs.get("complete") is True
        except (KeyError, DataError):
            return False

    def attrs(self, case_id: str) -> dict[str, Any]:
        return dict(self._group(case_id).attrs)

    def root_attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    def tumor_pixels(self, case_id: str) -> np.ndarray:
        return np.asarray(self._group(case_id)["tumor_pixels"][:])

    def read_case(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole case ``(image float16, mask uint8)``, from the LRU cache when there."""
        if case_id in self._cache:
            self._cache.move_to_end(case_id)
            return self._cache[case_id]
        group = self._group(case_id)
        pair = (np.asarray(group["image"][:]), np.asarray(group["mask"][:]))
        size = pair[0].nbytes + pair[1].nbytes
        if size <= self.cache_bytes:
            self._cache[case_id] = pair
            self._cached += size
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old[0].nbytes + old[1].nbytes
        return pair

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

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open lazily
        state = dict(self.__dict__)
        state.update(_root=None, _cache=OrderedDict(), _cached=0)
        return state
