"""Writing a slice store: creating it safely, and one case at a time, made visible last."""

from __future__ import annotations

from typing import Any

import fsspec
import numpy as np
import zarr

from lungseg.core.errors import DataError, OutputError
from lungseg.store.layout import (
    FORMAT_VERSION,
    IMAGE_DTYPE,
    _batched,
    _check_version,
    _compressors,
    quantise,
)


class StoreWriting:
    """The write side of :class:`~lungseg.store.slices.SliceStore` (which it is mixed into).

    It uses what :class:`~lungseg.store.slices.SliceStore` defines: ``path``,
    ``storage_options``, ``_root``, ``_open(mode)`` and ``root_attrs()``.
    """

    path: str
    storage_options: dict[str, Any]
    _root: zarr.Group | None

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
            image: ``(n, H, W)`` float array, finite; stored quantised to int16
                (:func:`~lungseg.store.layout.quantise`: ``scale`` and ``offset`` are the
                ``image`` array's attributes).
            mask: ``(n, H, W)`` {0, 1} array, or ``None`` (stored as zeros).
            attrs: geometry, trace, kept slices, recipe and source paths (JSON-ready).

        Raises:
            ValueError: ``image`` is not ``(n, H, W)``, is not finite, or ``mask`` has
                another shape.
        """
        if image.ndim != 3 or (mask is not None and mask.shape != image.shape):
            raise ValueError(
                f"case {case_id!r}: image must be (n, H, W) and mask the same shape, got "
                f"{image.shape} and {None if mask is None else mask.shape}"
            )
        stored, scale_offset = quantise(image)
        root = self._open("a")
        n, h, w = image.shape
        if mask is None:
            mask = np.zeros(image.shape, dtype=np.uint8)
        group = root.create_group(case_id, overwrite=True, attributes={"complete": False})
        arrays = (("image", stored, IMAGE_DTYPE, scale_offset), ("mask", mask, np.uint8, {}))
        for name, data, dtype, array_attrs in arrays:
            arr = group.create_array(
                name,
                shape=(n, h, w),
                chunks=(1, h, w),
                shards=(n, h, w),
                dtype=dtype,
                compressors=_compressors(),
                attributes=array_attrs,
            )
            with _batched(n):
                arr[:] = data.astype(dtype, copy=False)
        counts = mask.reshape(n, -1).sum(axis=1, dtype=np.int64).astype(np.int32)
        group.create_array("tumor_pixels", shape=(n,), dtype=np.int32, chunks=(max(n, 1),))[:] = (
            counts
        )
        group.attrs.update({**attrs, "slices": n, "complete": True})  # last write: now visible
