from __future__ import annotations

import numpy as np
import pytest
import zarr

from lungseg.core.errors import DataError
from lungseg.store.slices import SliceStore


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
    assert got_image.dtype == np.float32 and got_mask.dtype == np.uint8  # widened once, on read
    np.testing.assert_allclose(got_image, image, atol=1e-3)
    np.testing.assert_array_equal(got_mask, mask)
    np.testing.assert_array_equal(again.tumor_pixels("lung_001"), mask.reshape(4, -1).sum(1))
    assert again.tumor_pixels("lung_001")[0] == 0

    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root.attrs["format_version"] == 2 and root.attrs["preprocess_hash"] == "hash1"
    arr = root["lung_001/image"]
    assert arr.dtype == np.int16  # quantised: value = offset + scale * stored
    plain = arr.attrs["offset"] + arr.attrs["scale"] * arr[:].astype(np.float64)
    assert np.abs(plain - image).max() <= arr.attrs["scale"] / 2 + 1e-6
    assert arr.chunks == (1, 16, 16) and arr.shards == (4, 16, 16)
    assert root["lung_001/mask"].dtype == np.uint8
    assert root["lung_001"].attrs["complete"] is True and root["lung_001"].attrs["slices"] == 4


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
    one_case = 4 * 16 * 16 * 5  # float32 image + uint8 mask, decoded
    small = SliceStore(str(tmp_path / "s.zarr"), cache_bytes=one_case)
    small.read_case("a")
    small.read_case("b")
    assert list(small._cache) == ["b"] and small.cached_bytes() == one_case
    two = SliceStore(str(tmp_path / "s.zarr"), cache_bytes=2 * one_case)
    two.read_case("a")
    two.read_case("b")
    two.read_case("a")  # a is now the most recently used
    _write(two, "c")
    two.read_case("c")
    assert list(two._cache) == ["a", "c"] and two.cached_bytes() == 2 * one_case


def test_read_slice_matches_read_case_cached_or_not(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"))
    store.initialise([], "h", overwrite=False)
    _image, mask = _write(store, "a", n=6)
    _write(store, "b", n=6, seed=1)
    whole_image, _whole_mask = SliceStore(store.path).read_case("a")
    for budget in (0, 6 * 16 * 16 * 5, 10**9):
        reader = SliceStore(store.path, cache_bytes=budget)
        for k in (5, 0, 3):
            got_image, got_mask = reader.read_slice("a", k)
            assert got_image.dtype == np.float32 and got_mask.dtype == np.uint8
            np.testing.assert_array_equal(got_image, whole_image[k])
            np.testing.assert_array_equal(got_mask, mask[k])
        reader.read_slice("b", 2)
        cached = {0: [], 6 * 16 * 16 * 5: ["a"], 10**9: ["a", "b"]}[budget]
        assert list(reader._cache) == cached  # admitted while they fit, nothing evicted


def test_read_slice_of_a_missing_case_says_how_to_fix(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"), cache_bytes=0)
    store.initialise([], "h", overwrite=False)
    with pytest.raises(DataError, match="no case 'x'; run `lungseg preprocess`"):
        store.read_slice("x", 0)


def test_cache_bytes_default_and_check_are_the_recipes(tmp_path):
    from lungseg.core.recipe import StoreConfig

    assert SliceStore(str(tmp_path / "s.zarr")).cache_bytes == StoreConfig().cache_bytes
    with pytest.raises(ValueError, match=r"cache_bytes: must be >= 0 \(0 turns the cache off\)"):
        SliceStore(str(tmp_path / "s.zarr"), cache_bytes=-1)


def test_from_config_uses_the_recipe_cache_budget(tmp_path):
    from lungseg.core.recipe import RecipeError, recipe_from_dict

    recipe = recipe_from_dict({"store": {"path": str(tmp_path / "s.zarr"), "cache_bytes": 1234}})
    store = SliceStore.from_config(recipe.store)
    assert store.path == str(tmp_path / "s.zarr") and store.cache_bytes == 1234
    with pytest.raises(RecipeError, match="store.cache_bytes: must be >= 0"):
        recipe_from_dict({"store": {"cache_bytes": -5}})


def test_a_store_of_another_format_version_is_refused(tmp_path):
    path = str(tmp_path / "s.zarr")
    store = SliceStore(path)
    store.initialise([], "h", overwrite=False)
    _write(store, "a")
    zarr.open_group(path, mode="a").attrs["format_version"] = 99
    with pytest.raises(DataError, match="store format version 99.*--overwrite"):
        SliceStore(path).cases()
    with pytest.raises(DataError, match="store format version 99.*--overwrite"):
        SliceStore(path).initialise([], "h", overwrite=False)
    SliceStore(path).initialise([], "h", overwrite=True)
    assert SliceStore(path).cases() == []


def test_rewriting_a_case_replaces_it_and_bad_shapes_are_refused(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"), cache_bytes=0)
    store.initialise([], "h", overwrite=False)
    _write(store, "a", n=4)
    _write(store, "a", n=2, seed=3)
    image, _ = SliceStore(store.path).read_case("a")
    assert image.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="image must be"):
        store.write_case("b", np.zeros((16, 16)), None, {})
    with pytest.raises(ValueError, match="mask the same shape"):
        store.write_case("b", np.zeros((2, 16, 16)), np.zeros((3, 16, 16), np.uint8), {})
    assert SliceStore(store.path).cases() == ["a"]


def test_unlabelled_case_is_stored_with_an_empty_mask(tmp_path):
    store = SliceStore(str(tmp_path / "s.zarr"))
    store.initialise([], "h", overwrite=False)
    store.write_case("scan", np.ones((3, 8, 8), np.float32), None, {})
    _image, mask = SliceStore(store.path).read_case("scan")
    assert mask.shape == (3, 8, 8) and not mask.any()
    assert SliceStore(store.path).tumor_pixels("scan").tolist() == [0, 0, 0]


def test_pickled_store_reopens_without_its_cache(tmp_path):
    import pickle

    store = SliceStore(str(tmp_path / "s.zarr"))
    store.initialise([], "h", overwrite=False)
    _write(store, "a")
    reader = SliceStore(store.path)
    reader.read_case("a")
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.cached_bytes() == 0 and clone.cases() == ["a"]
