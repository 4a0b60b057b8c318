from __future__ import annotations

import numpy as np
import pytest
import torch

from lungseg.data import SliceDataset, build_augment, split_cases
from lungseg.errors import DataError
from lungseg.preprocess import run_preprocess
from lungseg.recipe import AugmentConfig
from lungseg.store import SliceStore


def test_split_is_by_case_reproducible_and_disjoint():
    ids = [f"lung_{i:03d}" for i in range(10)]
    a = split_cases(ids, 0.2, 0.1, seed=4)
    assert a == split_cases(ids, 0.2, 0.1, seed=4)
    assert len(a["val"]) == 2 and len(a["test"]) == 1 and len(a["train"]) == 7
    assert set(a["val"]).isdisjoint(a["train"]) and set(a["test"]).isdisjoint(a["train"])
    assert sorted(a["val"] + a["test"] + a["train"]) == ids
    assert a != split_cases(ids, 0.2, 0.1, seed=5)


def test_split_with_too_few_cases_is_a_clear_error():
    with pytest.raises(DataError, match="cannot be split"):
        split_cases(["lung_001"], 0.2, 0.0, seed=0)


def test_dataset_over_a_real_store(tiny_recipe):
    run_preprocess(tiny_recipe, workers=1, progress=False)
    store = SliceStore(tiny_recipe.store.path)
    cases = store.cases()
    assert len(cases) == 5
    dataset = SliceDataset(store, cases[:2])
    assert len(dataset) == 2 * 30  # 40 slices, the first 10 skipped
    image, mask = dataset[5]
    assert image.shape == (1, 32, 32) and mask.shape == (1, 32, 32)
    assert image.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    counts = np.concatenate([store.tumor_pixels(c) for c in cases[:2]])
    np.testing.assert_array_equal(dataset.slice_labels, counts > 0)
    assert dataset.slice_labels.any()


def test_augmentation_keeps_masks_binary_and_is_reproducible():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32), dtype=np.float32)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 10:22] = 1
    cfg = AugmentConfig(p=1.0, rotate=30, scale=[0.8, 1.2], translate=0.1)
    first = build_augment(cfg, seed=7)(image=image, mask=mask)
    again = build_augment(cfg, seed=7)(image=image, mask=mask)
    np.testing.assert_array_equal(first["mask"], again["mask"])
    np.testing.assert_allclose(first["image"], again["image"])
    assert set(np.unique(first["mask"])) <= {0, 1}
    assert not np.array_equal(first["mask"], mask)  # it did move
    assert build_augment(AugmentConfig(enabled=False), seed=0) is None
