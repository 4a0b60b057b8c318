"""2.5D context (``data.context: K``): 2K+1 neighbouring slices of one case as channels.

Training (:class:`SliceDataset`) and prediction (:func:`predict_probs`) must stack exactly the
same slices: the centre's neighbours in the same case, the end slices of the stored range
repeated, never a slice of another case.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lungseg.core.recipe import AugmentConfig
from lungseg.inference.predictor import Predictor, predict_probs
from lungseg.store.layout import context_indices
from lungseg.store.slices import SliceStore
from lungseg.training.dataset import SliceDataset, build_augment

#: Slices per case; ``b`` is shorter than any window of K = 2.
CASES = {"a": 6, "b": 2, "c": 4}


def _value(case: str, k: int) -> float:
    """Every pixel of slice ``k`` of ``case`` (exact in float16)."""
    return 100.0 * (1 + list(CASES).index(case)) + k


@pytest.fixture
def store(tmp_path) -> SliceStore:
    """Three cases whose slices say which case and slice they are; masks say the slice too."""
    writer = SliceStore(str(tmp_path / "s.zarr"))
    writer.initialise([], "h", overwrite=False)
    for case, n in CASES.items():
        image = np.stack([np.full((8, 8), _value(case, k), np.float32) for k in range(n)])
        mask = np.zeros((n, 8, 8), np.uint8)
        for k in range(n):
            mask[k].flat[: k % 3] = 1  # slices 0, 3 have no tumour
        writer.write_case(case, image, mask, {"trace": []})
    return writer


def test_context_indices_repeat_the_ends():
    np.testing.assert_array_equal(context_indices(0, 3, 3, 0), [[0], [1], [2]])
    np.testing.assert_array_equal(
        context_indices(0, 4, 4, 2),
        [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]],
    )
    np.testing.assert_array_equal(context_indices(1, 2, 1, 1), [[0, 0, 0]])  # one-slice case


@pytest.mark.parametrize("cache_bytes", [0, 2**20])  # slice by slice, and whole cases cached
@pytest.mark.parametrize("context", [1, 2, 5])
def test_channels_are_the_neighbours_in_the_same_case(tmp_path, store, context, cache_bytes):
    reader = SliceStore(store.path, cache_bytes=cache_bytes)
    dataset = SliceDataset(reader, list(CASES), context=context)
    assert len(dataset) == sum(CASES.values())
    for i, (case, k) in enumerate(dataset.index):
        image, mask = dataset[i]
        assert image.shape == (2 * context + 1, 8, 8) and image.dtype == torch.float32
        assert mask.shape == (1, 8, 8)
        n = CASES[case]
        want = [_value(case, min(max(j, 0), n - 1)) for j in range(k - context, k + context + 1)]
        assert image[:, 0, 0].tolist() == want, (case, k)
        assert (image == image[:, :1, :1]).all()  # whole slices, never a mix
        assert int(mask.sum()) == k % 3  # the centre slice's mask
    np.testing.assert_array_equal(
        dataset.slice_labels, SliceDataset(reader, list(CASES)).slice_labels
    )  # labels per centre slice, whatever the context
    np.testing.assert_array_equal(
        dataset.slice_labels,
        [k % 3 > 0 for k in (0, 1, 2, 3, 4, 5)] + [False, True] + [False, True, True, False],
    )


def test_context_zero_gives_todays_items(store):
    dataset = SliceDataset(store, list(CASES))
    for i, (case, k) in enumerate(dataset.index):
        image, mask = store.read_slice(case, k)
        got_image, got_mask = dataset[i]
        torch.testing.assert_close(got_image, torch.from_numpy(image.astype(np.float32)[None]))
        torch.testing.assert_close(got_mask, torch.from_numpy(mask[None].astype(np.float32)))
    wide = SliceDataset(store, list(CASES), context=2)
    for i in range(len(dataset)):
        torch.testing.assert_close(wide[i][0][2:3], dataset[i][0], rtol=0, atol=0)
        torch.testing.assert_close(wide[i][1], dataset[i][1], rtol=0, atol=0)


def test_read_slices_matches_read_slice_cached_or_not(store):
    for cache_bytes in (0, 2**20):
        reader = SliceStore(store.path, cache_bytes=cache_bytes)
        image, mask = reader.read_slices("a", 1, 4)
        assert image.shape == (3, 8, 8) and image.dtype == np.float32 and mask.dtype == np.uint8
        for j, k in enumerate(range(1, 4)):
            one_image, one_mask = reader.read_slice("a", k)
            np.testing.assert_array_equal(image[j], one_image)
            np.testing.assert_array_equal(mask[j], one_mask)
        assert reader.cached_bytes() == (0 if cache_bytes == 0 else 6 * 64 * 5)


CFG = AugmentConfig(p=1.0, rotate=30, scale=[0.8, 1.2], translate=0.1)


def _pattern(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random((n, 24, 24), dtype=np.float32)
    mask = np.zeros((n, 24, 24), np.uint8)
    mask[:, 6:14, 9:17] = 1
    return image, mask


@pytest.mark.parametrize("context", [1, 3])  # 3 and 7 channels (cv2 warps 4 at a time)
def test_augmentation_moves_every_channel_and_the_mask_together(tmp_path, context):
    store = SliceStore(str(tmp_path / "aug.zarr"))
    store.initialise([], "h", overwrite=False)
    image, mask = _pattern(2 * context + 1)
    store.write_case("same", np.repeat(image[:1], len(image), 0), mask, {"trace": []})
    store.write_case("diff", image, mask, {"trace": []})
    k = context  # the middle slice: its window is the whole case
    same = SliceDataset(store, ["same"], build_augment(CFG, seed=5), context)
    stack, moved = same[k]
    assert not torch.equal(moved[0], torch.from_numpy(mask[k].astype(np.float32)))  # it moved
    for c in range(1, len(stack)):
        torch.testing.assert_close(stack[c], stack[0], rtol=0, atol=0)
    diff = SliceDataset(store, ["diff"], build_augment(CFG, seed=5), context)
    stack, moved = diff[k]
    stored, _ = store.read_case("diff")
    for c in range(len(stack)):  # each channel as the lone slice moves with the same seed
        alone = build_augment(CFG, seed=5)(image=stored[c], mask=mask[k])
        np.testing.assert_allclose(stack[c].numpy(), alone["image"], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(moved[0].numpy(), alone["mask"] >= 0.5)


class _Recorder(nn.Module):
    """Logits = the sum of the channels; keeps every input batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("context", [0, 1, 2])
def test_prediction_stacks_exactly_what_training_stacks(store, context):
    dataset = SliceDataset(store, list(CASES), context=context)
    for case, n in CASES.items():
        slices, _ = store.read_case(case)
        model = _Recorder()
        probs = predict_probs(model, slices, batch_size=3, context=context)
        seen = torch.cat(model.seen)
        assert [len(b) for b in model.seen] == [min(3, n - s) for s in range(0, n, 3)]
        first = dataset.index.index((case, 0))
        trained = torch.stack([dataset[first + k][0] for k in range(n)])
        torch.testing.assert_close(seen, trained, rtol=0, atol=0)
        np.testing.assert_allclose(probs, torch.sigmoid(trained.sum(1)).numpy(), rtol=1e-6)


def test_predict_probs_without_context_is_unchanged(store):
    slices, _ = store.read_case("a")
    model = _Recorder()
    predict_probs(model, slices.astype(np.float16), batch_size=4)
    expected = [torch.from_numpy(slices[s : s + 4])[:, None] for s in (0, 4)]
    for got, want in zip(model.seen, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_context_must_not_be_negative(store):
    with pytest.raises(ValueError, match="context"):
        SliceDataset(store, ["a"], context=-1)
    with pytest.raises(ValueError, match="context"):
        Predictor(_Recorder(), None, threshold=0.5, batch_size=2, context=-1)
