"""The local fast read path reads exactly what plain zarr-python reads from the same files."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader
from zarr.codecs import BloscCodec

from lungseg.core.errors import DataError
from lungseg.store.layout import LEVELS, dequantise, quantise
from lungseg.store.shardread import open_local
from lungseg.store.slices import SliceStore
from lungseg.training.dataset import SliceDataset

CASES = {"a": 7, "b": 1, "c": 12}  # b: one slice; every window of 5 is clipped somewhere


def _case(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CT-like values (normalised HU with noise) and a mask with empty and full slices."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.01, 0.03, (n, 24, 20)).astype(np.float32)
    image[:, :4] = -1024 / 3071  # air
    mask = (rng.random((n, 24, 20)) > 0.85).astype(np.uint8)
    mask[::3] = 0  # all-zero slices: zarr writes no chunk for them
    return image, mask


@pytest.fixture
def store_path(tmp_path) -> str:
    path = str(tmp_path / "s.zarr")
    writer = SliceStore(path)
    writer.initialise([], "h", overwrite=False)
    for i, (case, n) in enumerate(CASES.items()):
        writer.write_case(case, *_case(n, i), {"trace": []})
    return path


def _plain_zarr(path: str, case: str) -> tuple[np.ndarray, np.ndarray]:
    """The case as plain zarr-python reads it, values as docs/store.md says to compute them."""
    group = zarr.open_group(path, mode="r")[case]
    image = group["image"]
    return dequantise(image[:], image.attrs["scale"], image.attrs["offset"]), group["mask"][:]


def test_every_slice_equals_plain_zarr(store_path):
    fast = SliceStore(store_path, cache_bytes=0)
    for case, n in CASES.items():
        image, mask = _plain_zarr(store_path, case)
        assert fast._handles(case).fast is not None  # the fast path is the one under test
        for k in range(n):
            got_image, got_mask = fast.read_slice(case, k)
            np.testing.assert_array_equal(got_image, image[k])
            np.testing.assert_array_equal(got_mask, mask[k])
        whole = fast.read_slices(case, 0, n)
        np.testing.assert_array_equal(whole[0], image)
        np.testing.assert_array_equal(whole[1], mask)
    cached = SliceStore(store_path)  # read_case through the fast path, then from the cache
    for case in CASES:
        np.testing.assert_array_equal(cached.read_case(case)[0], _plain_zarr(store_path, case)[0])


def test_quantisation_error_is_at_most_half_a_step(store_path):
    store = SliceStore(store_path, cache_bytes=0)
    for i, (case, n) in enumerate(CASES.items()):
        original, _ = _case(n, i)
        scale = zarr.open_group(store_path, mode="r")[case]["image"].attrs["scale"]
        span = float(original.max() - original.min())
        assert scale <= max(span, 1e-30) / LEVELS * 2  # the smallest power of two that fits
        error = np.abs(store.read_case(case)[0] - original).max()
        assert error <= scale / 2 + 1e-7
    exact = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 + 100  # on a dyadic grid
    stored, so = quantise(exact)
    np.testing.assert_array_equal(dequantise(stored, so["scale"], so["offset"]), exact)
    with pytest.raises(ValueError, match="finite"):
        quantise(np.array([[[0.0, np.nan]]], np.float32))


def _sharded(path: str, n: int, per_shard: int, data: np.ndarray, write: slice) -> zarr.Array:
    arr = zarr.create_array(
        path,
        shape=data.shape,
        chunks=(1, *data.shape[1:]),
        shards=(per_shard, *data.shape[1:]),
        dtype=data.dtype,
        compressors=[BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
    )
    arr[write] = data[write]
    return arr


def test_partial_last_shard_missing_shards_and_chunks(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(-500, 3000, (10, 8, 6)).astype(np.int16)
    data[5] = 0  # equals the fill value: no chunk is written for it
    arr = _sharded(str(tmp_path / "x"), 10, 4, data, slice(0, 10))  # shards of 4, 4, 2
    reader = open_local(tmp_path / "x")
    assert reader is not None and reader.per_shard == 4
    for k in range(10):
        np.testing.assert_array_equal(reader.read(k, k + 1)[0], arr[k])
    np.testing.assert_array_equal(reader.read(0, 10), arr[:])
    np.testing.assert_array_equal(reader.read(0, 0, rows=np.array([9, 0, 5])), arr[[9, 0, 5]])
    with pytest.raises(IndexError):
        reader.read(9, 11)

    part = _sharded(str(tmp_path / "y"), 12, 4, data.repeat(2, 0)[:12], slice(0, 3))
    reader = open_local(tmp_path / "y")  # shards 1 and 2 never written: all fill value
    np.testing.assert_array_equal(reader.read(0, 12), part[:])


def test_layouts_it_does_not_handle_fall_back_to_zarr(tmp_path):
    plain = zarr.create_array(str(tmp_path / "p"), shape=(3, 4, 4), chunks=(1, 4, 4), dtype="i2")
    plain[:] = 1
    assert open_local(tmp_path / "p") is None  # not sharded
    tiled = zarr.create_array(
        str(tmp_path / "t"), shape=(3, 4, 4), chunks=(1, 2, 4), shards=(3, 4, 4), dtype="i2"
    )
    tiled[:] = 1
    assert open_local(tmp_path / "t") is None  # chunks are not whole slices
    assert open_local(tmp_path / "nothing") is None


def test_damaged_shard_index_is_an_error_not_wrong_data(store_path):
    shard = f"{store_path}/c/image/c/0/0/0"
    with open(shard, "r+b") as f:
        f.seek(-10, 2)
        f.write(b"\xff\xff")
    with pytest.raises(OSError, match="index is damaged"):
        SliceStore(store_path, cache_bytes=0).read_slice("c", 0)


def test_a_float16_store_of_format_1_asks_for_a_rebuild(store_path):
    zarr.open_group(store_path, mode="a").attrs["format_version"] = 1
    with pytest.raises(DataError, match="format version 1.*--overwrite"):
        SliceStore(store_path).read_slice("a", 0)


def _items(dataset: SliceDataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [dataset[i] for i in range(len(dataset))]


def test_context_windows_and_forked_workers_match_plain_zarr(store_path):
    slow = SliceStore(store_path, cache_bytes=0)
    slow.fast_reads = False  # zarr-python for every read
    expected = _items(SliceDataset(slow, list(CASES), context=2))
    for i, (case, k) in enumerate(SliceDataset(slow, list(CASES)).index):  # by hand, too
        image, mask = _plain_zarr(store_path, case)
        rows = np.clip(np.arange(k - 2, k + 3), 0, CASES[case] - 1)
        np.testing.assert_array_equal(expected[i][0].numpy(), image[rows])
        np.testing.assert_array_equal(expected[i][1].numpy()[0], mask[k])

    fast = SliceStore(store_path, cache_bytes=0)
    dataset = SliceDataset(fast, list(CASES), context=2)
    dataset[0]  # open shards in the parent: the forked workers inherit its files
    assert fast._handles("a").fast is not None
    for got, want in zip(_items(dataset), expected, strict=True):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    loader = DataLoader(
        dataset,
        batch_size=3,
        num_workers=2,
        multiprocessing_context=multiprocessing.get_context("fork"),
    )
    images = torch.cat([batch[0] for batch in loader])
    masks = torch.cat([batch[1] for batch in loader])
    assert images.shape == (sum(CASES.values()), 5, 24, 20)
    assert torch.equal(images, torch.stack([e[0] for e in expected]))
    assert torch.equal(masks, torch.stack([e[1] for e in expected]))
    np.testing.assert_array_equal(dataset[3][0].numpy(), expected[3][0].numpy())  # parent
