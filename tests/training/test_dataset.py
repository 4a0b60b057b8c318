from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lungseg.core.build import assemble
from lungseg.core.errors import DataError
from lungseg.core.recipe import AugmentConfig
from lungseg.preprocess.run import run_preprocess
from lungseg.store.slices import SliceStore
from lungseg.training.dataset import SliceDataset, build_augment, split_cases


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


def _augmented_epochs(recipe, seed: int) -> list[list[torch.Tensor]]:
    """Two epochs of augmented training batches, in order, from 2 loader workers."""
    from lungseg.training.dataset import SliceDataModule, _seed_worker
    from lungseg.training.sampling import ShardSampler

    pl.seed_everything(seed, workers=True, verbose=False)
    data = SliceDataModule(assemble(recipe))
    data.setup("fit")
    loader = torch.utils.data.DataLoader(
        data.train_set,
        batch_size=8,
        sampler=ShardSampler(16),  # the same 16 slices, in order, every epoch
        num_workers=2,
        worker_init_fn=_seed_worker,
        persistent_workers=True,
    )
    epochs = [[torch.cat(batch, 1) for batch in loader] for _ in range(2)]
    for batches in epochs:
        masks = torch.cat([b[:, 1] for b in batches])
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
    return epochs


def test_worker_augmentation_is_reproducible_per_seed_and_differs_per_epoch(tiny_recipe):
    tiny_recipe.augment = AugmentConfig(p=1.0, rotate=30, scale=[0.8, 1.2], translate=0.1)
    run_preprocess(tiny_recipe, workers=1, progress=False)
    first = _augmented_epochs(tiny_recipe, seed=3)
    again = _augmented_epochs(tiny_recipe, seed=3)
    other = _augmented_epochs(tiny_recipe, seed=4)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not all(torch.equal(x, y) for x, y in zip(first[0], first[1], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first[0], other[0], strict=True))


def test_serialised_albumentations_transform_from_the_recipe():
    import albumentations as A

    from lungseg.core.errors import RecipeError

    spec = A.to_dict(A.Compose([A.HorizontalFlip(p=1.0)]))
    flip = build_augment(AugmentConfig(transform=spec), seed=0)
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    mask = (image > 7).astype(np.uint8)
    out = flip(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], image[:, ::-1])
    np.testing.assert_array_equal(out["mask"], mask[:, ::-1])
    with pytest.raises(RecipeError, match=r"augment\.transform"):
        build_augment(AugmentConfig(transform={"transform": {"name": "nope"}}), seed=0)


def test_data_module_stacks_the_recipes_context(tiny_recipe):
    from lungseg.training.dataset import SliceDataModule

    tiny_recipe.data.context = 2
    tiny_recipe.augment = AugmentConfig(p=1.0, rotate=30, scale=[0.8, 1.2], translate=0.1)
    run_preprocess(tiny_recipe, workers=1, progress=False)
    data = SliceDataModule(assemble(tiny_recipe))
    data.setup("fit")
    assert data.train_set.context == data.val_set.context == 2
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (8, 5, 32, 32) and masks.shape == (8, 1, 32, 32)
    images, masks = next(iter(data.val_dataloader()))
    assert images.shape == (8, 5, 32, 32) and masks.shape == (8, 1, 32, 32)
    store = SliceStore(tiny_recipe.store.path)
    case = data.val_set.case_ids[0]
    stored, _ = store.read_case(case)
    np.testing.assert_array_equal(images[0].numpy(), stored[[0, 0, 0, 1, 2]])  # ends repeated
    np.testing.assert_array_equal(images[3].numpy(), stored[[1, 2, 3, 4, 5]])


@pytest.mark.parametrize("context", [0, 2])
def test_items_are_the_callers_own_and_leave_the_store_cache_alone(tmp_path, context):
    store = SliceStore(str(tmp_path / "s.zarr"))  # cached: items come from the decoded case
    store.initialise([], "h", overwrite=False)
    rng = np.random.default_rng(0)
    image = rng.random((6, 16, 16), dtype=np.float32)
    mask = (rng.random((6, 16, 16)) > 0.7).astype(np.uint8)
    store.write_case("a", image, mask, {"trace": []})
    before = [a.copy() for a in store.read_case("a")]
    augment = build_augment(AugmentConfig(p=1.0, rotate=30, translate=0.1), seed=1)
    for transform in (None, augment):
        dataset = SliceDataset(store, ["a"], transform, context=context)
        for i in range(len(dataset)):
            item_image, item_mask = dataset[i]
            item_image += 100.0  # callers (and augmentation) may write into their items
            item_mask += 1.0
    assert store.cached_bytes() > 0
    for got, want in zip(store.read_case("a"), before, strict=True):
        np.testing.assert_array_equal(got, want)
