"""Slices from the store as a torch Dataset, augmentation, the case-level split, DataModule."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from lungseg.core.build import Parts
from lungseg.core.errors import DataError, RecipeError
from lungseg.core.recipe import AugmentConfig, Recipe
from lungseg.store.layout import context_indices
from lungseg.store.slices import SliceStore
from lungseg.training.folds import case_split
from lungseg.training.sampling import ShardSampler


def build_augment(cfg: AugmentConfig, seed: int) -> A.Compose | None:
    """The seed's affine augmentation (rotation, scale, translation), image and mask jointly.

    Masks use nearest-neighbour interpolation, so they stay binary. Images may be ``(H, W)``
    or ``(H, W, C)``: the channels of a 2.5D stack move together, each exactly as a lone
    slice would with the same seed. ``cfg.transform``, an albumentations serialised transform
    (``A.to_dict(t)``), replaces the affine (it must accept ``2K+1`` channels when
    ``data.context`` is K); whatever it does to the mask, :class:`SliceDataset` thresholds
    the mask back to {0, 1} at 0.5.

    Args:
        cfg: the recipe's ``augment`` section.
        seed: seed of the transform's random stream (each loader worker reseeds its copy).

    Returns:
        The transform, or ``None`` when ``augment.enabled`` is false.

    Raises:
        RecipeError: ``augment.transform`` is not a valid serialised albumentations transform.
    """
    if not cfg.enabled:
        return None
    if cfg.transform is not None:
        try:
            loaded = A.from_dict(cfg.transform)
        except Exception as exc:
            raise RecipeError(
                f"augment.transform: not an albumentations serialised transform ({exc}); "
                "write it with albumentations.to_dict(transform)"
            ) from None
        return A.Compose([loaded], seed=seed)
    affine = A.Affine(
        rotate=(-cfg.rotate, cfg.rotate),
        scale=tuple(cfg.scale),
        translate_percent=(-cfg.translate, cfg.translate),
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=0,
        p=cfg.p,
    )
    return A.Compose([affine], seed=seed)


class SliceDataset(Dataset):
    """(image, mask) slice pairs of some cases of a :class:`SliceStore`, with 2.5D context.

    Item ``i`` is slice ``k`` of a case: ``image`` float32 ``(2K+1, H, W)``, the case's
    slices ``k - K`` to ``k + K`` (slices past either end of the stored range repeat the end
    slice, so a stack never reaches another case), and ``mask`` float32 ``(1, H, W)`` in
    {0, 1}, the centre slice's. With K = 0 (the seed's setup) the image is ``(1, H, W)``.

    Args:
        store: the slice store.
        case_ids: the cases to serve (one split).
        transform: albumentations transform applied to training items, or ``None``; every
            channel and the mask move together.
        context: ``data.context``, K slices on each side of the centre.

    Raises:
        ValueError: ``context`` is negative.
    """

    def __init__(
        self,
        store: SliceStore,
        case_ids: list[str],
        transform: A.Compose | None = None,
        context: int = 0,
    ) -> None:
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.store = store
        self.case_ids = list(case_ids)
        self.transform = transform
        self.context = context
        index, labels = [], []
        #: slices of each case (its stored, kept range).
        self.slices: dict[str, int] = {}
        for case_id in self.case_ids:
            counts = store.tumor_pixels(case_id)
            self.slices[case_id] = len(counts)
            index.extend((case_id, k) for k in range(len(counts)))
            labels.append(counts > 0)
        self.index = index
        #: 1 where the (centre) slice contains tumour: each item's class (the seed's step 3A).
        self.slice_labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, int)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        case_id, k = self.index[i]
        img, msk = self._read(case_id, k)
        if self.transform is not None:
            img, msk = self._augment(img, msk)
        return torch.from_numpy(img), torch.from_numpy(msk[None].astype(np.float32))

    def _read(self, case_id: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``k``'s stack, float32 ``(2K+1, H, W)`` (a copy), and its mask ``(H, W)``."""
        if self.context == 0:  # copies of the store's cache: augmentation never touches it
            image, mask = self.store.read_slices(case_id, k, k + 1, copy=True)
            return image, mask[0]
        rows = context_indices(k, k + 1, self.slices[case_id], self.context)[0]
        start, stop = int(rows[0]), int(rows[-1]) + 1
        if stop - start == len(rows):  # no end slice repeated: the range itself, owned
            images, masks = self.store.read_slices(case_id, start, stop, copy=True)
            return images, masks[k - start]
        images, masks = self.store.read_slices(case_id, start, stop)
        return images[rows - start], masks[k - start]  # indexing with an array copies

    def _augment(self, img: np.ndarray, msk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``transform`` on a ``(C, H, W)`` stack and its mask; the mask thresholded at 0.5."""
        if len(img) == 1:  # a lone slice goes in as (H, W), as it always has
            out = self.transform(image=img[0], mask=msk)
            return np.ascontiguousarray(out["image"])[None], out["mask"] >= 0.5
        out = self.transform(image=np.ascontiguousarray(np.moveaxis(img, 0, -1)), mask=msk)
        return np.ascontiguousarray(np.moveaxis(out["image"], -1, 0)), out["mask"] >= 0.5


def _seed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream, reproducible for a seed."""
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)


def split_cases(case_ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Split by case (never by slice), reproducibly for ``seed``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.

    Raises:
        DataError: too few cases for the requested split.
    """
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = math.ceil(len(ids) * val_fraction) if val_fraction > 0 else 0
    n_test = math.ceil(len(ids) * test_fraction) if test_fraction > 0 else 0
    if len(ids) - n_val - n_test < 1 or (val_fraction > 0 and n_val < 1):
        raise DataError(
            f"{len(ids)} preprocessed cases cannot be split into train/val/test with "
            f"split.val_fraction={val_fraction} and split.test_fraction={test_fraction}; "
            "add cases or lower the fractions"
        )
    shuffled = [ids[i] for i in order]
    return {
        "val": sorted(shuffled[:n_val]),
        "test": sorted(shuffled[n_val : n_val + n_test]),
        "train": sorted(shuffled[n_val + n_test :]),
    }


def open_store(recipe: Recipe) -> SliceStore:
    return SliceStore.from_config(recipe.store)


class SliceDataModule(pl.LightningDataModule):
    """Prepares the store once (rank 0), splits by case, builds the loaders.

    Args:
        parts: the run's assembled recipe (:func:`lungseg.core.build.assemble`): its recipe, and
            the sampler and preprocessing chain built from it.
    """

    def __init__(self, parts: Parts) -> None:
        super().__init__()
        # One writer for the whole job: global rank 0 fills the store that every node reads
        # (a shared file system or object storage); per-node writers would race on one store.
        self.prepare_data_per_node = False
        self.parts = parts
        self.recipe = parts.recipe
        self.sampler_factory = parts.sampler()
        self.splits: dict[str, list[str]] = {}

    def prepare_data(self) -> None:
        from lungseg.preprocess.run import run_preprocess

        run_preprocess(self.parts, progress=False)

    def setup(self, stage: str | None = None) -> None:
        store = open_store(self.recipe)
        cases = store.cases()
        if not cases:
            raise DataError(f"{store.path}: the store has no cases; run `lungseg preprocess` first")
        s = self.recipe.split
        self.splits = case_split(cases, s)
        augment = build_augment(self.recipe.augment, self.recipe.trainer.seed)
        context = self.recipe.data.context
        self.train_set = SliceDataset(store, self.splits["train"], augment, context)
        self.val_set = SliceDataset(
            store, self.splits["val"] or self.splits["train"], context=context
        )

    def write_split(self, output: str | Path) -> Path:
        path = Path(output) / "split.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.splits, indent=2))
        return path

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: Dataset, sampler: Any, **kwargs: Any) -> DataLoader:
        t = self.recipe.trainer
        return DataLoader(
            dataset,
            batch_size=t.batch_size,
            sampler=sampler,
            num_workers=t.num_workers,
            worker_init_fn=_seed_worker,
            persistent_workers=t.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = self.sampler_factory(
            self.train_set.slice_labels,
            num_replicas=world,
            rank=rank,
            seed=self.recipe.trainer.seed,
        )
        return self._loader(self.train_set, sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        world, rank = self._world()
        return self._loader(self.val_set, ShardSampler(len(self.val_set), world, rank))
