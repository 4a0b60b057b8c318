"""Metric plugins against hand-computed values and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from lungseg.api import surface_distances
from lungseg.core.manager import load_registry

SPACING = (0.7, 0.8, 2.5)


def metric(name: str):
    return load_registry().create("metric", name, {}, "metrics[0]")


def masks(shape=(10, 10, 6)) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.zeros(shape, bool), np.zeros(shape, bool)
    truth[2:6, 2:6, 1:3] = True  # 32 voxels
    pred[4:8, 2:6, 1:3] = True  # 32 voxels, 16 shared
    return pred, truth


def test_overlap_metrics_match_hand_counts():
    pred, truth = masks()
    assert metric("dice")(pred, truth, SPACING) == pytest.approx(2 * 16 / 64)
    assert metric("iou")(pred, truth, SPACING) == pytest.approx(16 / 48)
    assert metric("precision")(pred, truth, SPACING) == pytest.approx(16 / 32)
    assert metric("recall")(pred, truth, SPACING) == pytest.approx(16 / 32)
    pred[7, 2:6, 1:3] = False  # 8 fewer predicted voxels
    voxel_ml = 0.7 * 0.8 * 2.5 / 1000
    assert metric("volume-diff")(pred, truth, SPACING) == pytest.approx(8 * voxel_ml)


@pytest.mark.parametrize(
    ("name", "empty_both", "empty_pred", "empty_truth"),
    [
        ("dice", "nan", 0.0, 0.0),
        ("iou", "nan", 0.0, 0.0),
        ("precision", "nan", "nan", 0.0),
        ("recall", "nan", 0.0, "nan"),
        ("hd95", "nan", "nan", "nan"),
        ("volume-diff", 0.0, None, None),
        ("lesion-recall", "nan", 0.0, "nan"),
        ("fp-lesions", 0.0, 0.0, 1.0),
    ],
)
def test_empty_mask_rules(name, empty_both, empty_pred, empty_truth):
    fn = metric(name)
    pred, truth = masks()
    none = np.zeros_like(pred)
    for expected, (p, t) in (
        (empty_both, (none, none)),
        (empty_pred, (none, truth)),
        (empty_truth, (pred, none)),
    ):
        value = fn(p, t, SPACING)
        assert isinstance(value, float)
        if expected == "nan":
            assert math.isnan(value)
        elif expected is not None:
            assert value == pytest.approx(expected)


def test_hd95_single_voxels_uses_spacing():
    pred, truth = np.zeros((9, 9, 9), bool), np.zeros((9, 9, 9), bool)
    pred[4, 4, 2] = True
    truth[4, 4, 5] = True
    assert metric("hd95")(pred, truth, SPACING) == pytest.approx(3 * 2.5)
    assert metric("hd95")(truth, truth, SPACING) == 0.0


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Surfaces by checking all 6 neighbours, distances by all pairs (independent code)."""

    def surface(m: np.ndarray) -> np.ndarray:
        padded = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(3):
            for shift in (-1, 1):
                inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    d = cdist(surface(a), surface(b))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_agrees_with_brute_force_and_ignores_padding(seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    a = ndimage.binary_opening(rng.random((14, 12, 10)) > 0.55)
    b = ndimage.binary_opening(rng.random((14, 12, 10)) > 0.55)
    assert a.any() and b.any()
    value = metric("hd95")(a, b, SPACING)
    assert value == pytest.approx(_brute_hd95(a, b, SPACING))
    big_a, big_b = np.pad(a, 7), np.pad(b, 7)
    assert metric("hd95")(big_a, big_b, SPACING) == pytest.approx(value)
    d_ab, d_ba = surface_distances(a, b, SPACING)
    assert len(d_ab) and len(d_ba) and min(d_ab.min(), d_ba.min()) >= 0


def test_lesion_detection_counts_components():
    truth = np.zeros((12, 12, 12), bool)
    truth[1:3, 1:3, 1:3] = True  # lesion 1
    truth[3, 3, 3] = True  # touches lesion 1 at a corner: the same lesion (26-connected)
    truth[8:10, 8:10, 8:10] = True  # lesion 2, missed
    pred = np.zeros_like(truth)
    pred[3, 3, 3] = True  # detects lesion 1 through one voxel
    pred[6, 1, 10] = True  # a false-positive lesion
    pred[1, 10, 1] = True  # another
    assert metric("lesion-recall")(pred, truth, SPACING) == pytest.approx(0.5)
    assert metric("fp-lesions")(pred, truth, SPACING) == 2.0
    assert metric("lesion-recall")(truth, truth, SPACING) == 1.0
    assert metric("fp-lesions")(truth, truth, SPACING) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metric("dice")(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool), SPACING)
    with pytest.raises(ValueError, match="shape"):
        metric("hd95")(np.ones((2, 2, 2), bool), np.ones((2, 2, 3), bool), SPACING)
