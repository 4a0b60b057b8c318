from __future__ import annotations

import numpy as np
import pytest
import zarr

from lungseg.errors import DataError
from lungseg.store import SliceStore


def _write(store: SliceStore, case_id: str, n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.random((n, 16, 16), dtype=np.float32)
    mask = (rng.random((n, 16, 16)) > 0.8).astype(np.uint8)
    mask[0] = 0
    store.write_case(case_id, image, mask, {"geometry": {"shape": [1, 2, 3]}, "trace": []})
    return image, mask


def test_round_trip_and_layout_readable_with_plain_zarr(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"))
    store.initialise([{"name": "resize", "size": 16}], "hash1", overwrite=False)
    image, mask = _write(store, "lung_001")
    again = SliceStore(str(tmp_path / "s.zarr"))
    assert again.cases() == ["lung_001"]
    got_image, got_mask = again.read_case("lung_001")
    assert got_image.dtype == np.float16 and got_mask.dtype == np.uint8
    np.testing.assert_allclose(got_image, image, atol=1e-3)
    np.testing.assert_array_equal(got_mask, mask)
    np.testing.assert_array_equal(again.tumor_pixels("lung_001"), mask.reshape(4, -1).sum(1))
    assert again.tumor_pixels("lung_001")[0] == 0

    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root.attrs["format_version"] == 1 and root.attrs["preprocess_hash"] == "hash1"
    arr = root["lung_001/image"]
    assert arr.chunks == (1, 16, 16) and arr.shards == (4, 16, 16)


def test_incomplete_case_is_invisible(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"))
    store.initialise([], "h", overwrite=False)
    _write(store, "lung_001")
    _write(store, "lung_002")
    zarr.open_group(str(tmp_path / "s.zarr"), mode="a")["lung_002"].attrs["complete"] = False
    fresh = SliceStore(str(tmp_path / "s.zarr"))
    assert fresh.cases() == ["lung_001"]
    with pytest.raises(DataError, match="lung_002.*incomplete"):
        fresh.read_case("lung_002")


def test_a_store_from_another_chain_is_refused_unless_overwritten(tmp_path):
    path = str(tmp_path / "s.zarr")
    store = SliceStore(path)
    store.initialise([], "first", overwrite=False)
    _write(store, "lung_001")
    with pytest.raises(DataError, match="different preprocessing chain.*--overwrite"):
        SliceStore(path).initialise([], "second", overwrite=False)
    assert SliceStore(path).cases() == ["lung_001"]  # nothing damaged
    SliceStore(path).initialise([], "second", overwrite=True)
    assert SliceStore(path).cases() == []


def test_missing_store_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="run `lungseg preprocess"):
        SliceStore(str(tmp_path / "nope.zarr")).cases()


def test_cache_respects_its_byte_budget(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"), cache_bytes=0)
    store.initialise([], "h", overwrite=False)
    _write(store, "a")
    _write(store, "b")
    one_case = 4 * 16 * 16 * 3  # float16 image + uint8 mask
    small = SliceStore(str(tmp_path / "s.zarr"), cache_bytes=one_case)
    small.read_case("a")
    small.read_case("b")
    assert list(small._cache) == ["b"] and small._cached == one_case
