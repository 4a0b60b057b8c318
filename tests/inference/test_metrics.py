"""Metric plugins against hand-computed values and brute-force references."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from lungseg import testing
from lungseg.api import surface_distances
from lungseg.core.build import assemble
from lungseg.core.errors import RecipeError
from lungseg.core.manager import load_registry
from lungseg.core.recipe import recipe_from_dict
from lungseg.inference.scoring import case_row, summary, write_results

SPACING = (0.7, 0.8, 2.5)


def metric(name: str, **params):
    return load_registry().create("metric", name, params, "metrics[0]")


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
        ("nsd", "nan", 0.0, 0.0),
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


def _brute_nsd(a: np.ndarray, b: np.ndarray, spacing, tolerance: float) -> float:
    """NSD from surface points in mm (all 26 neighbours' faces checked by hand) and a k-d tree."""

    def surface(m: np.ndarray) -> np.ndarray:
        padded = np.pad(m, 1)
        points = []
        for x, y, z in np.argwhere(m):
            x, y, z = x + 1, y + 1, z + 1
            faces = (
                padded[x - 1, y, z], padded[x + 1, y, z], padded[x, y - 1, z],
                padded[x, y + 1, z], padded[x, y, z - 1], padded[x, y, z + 1],
            )  # fmt: skip
            if not all(faces):
                points.append((x - 1, y - 1, z - 1))
        return np.asarray(points, dtype=float) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    d_ab, _ = cKDTree(sb).query(sa)
    d_ba, _ = cKDTree(sa).query(sb)
    return ((d_ab <= tolerance).sum() + (d_ba <= tolerance).sum()) / (len(sa) + len(sb))


@pytest.mark.parametrize(("seed", "tolerance"), [(0, 2.0), (1, 1.0), (2, 3.3)])
def test_nsd_agrees_with_surface_points_and_a_kd_tree(seed, tolerance):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a, b = (ndimage.gaussian_filter(rng.standard_normal((16, 14, 10)), 2.0) > 0.05 for _ in "ab")
    spacing = (0.7, 0.9, 2.5)  # anisotropic, as CT is
    value = metric("nsd", tolerance=tolerance)(a, b, spacing)
    expected = _brute_nsd(a, b, spacing, tolerance)
    assert 0.0 < expected < 1.0  # a case that tells tolerances apart
    assert value == pytest.approx(expected)
    assert metric("nsd", tolerance=tolerance)(np.pad(a, 5), np.pad(b, 5), spacing) == value


def test_nsd_tolerance_is_in_mm_along_each_axis():
    truth = np.zeros((6, 6, 12), bool)
    truth[2:4, 2:4, 2:5] = True
    pred = np.roll(truth, 1, axis=2)  # one slice up: 2.5 mm apart along z
    spacing = (0.8, 0.8, 2.5)
    assert metric("nsd")(truth, truth, spacing) == 1.0  # identical masks
    assert metric("nsd", tolerance=2.5)(pred, truth, spacing) == 1.0
    partial = metric("nsd")(pred, truth, spacing)  # 2 mm: only the overlapping walls agree
    assert partial == pytest.approx(_brute_nsd(pred, truth, spacing, 2.0))
    assert 0.0 < partial < 1.0
    assert metric("nsd", tolerance=2.0)(pred, truth, (0.8, 0.8, 2.0)) == 1.0


def test_nsd_keeps_the_metric_contract_and_refuses_a_negative_tolerance():
    testing.check_metric(metric("nsd", tolerance=0.5))  # disjoint blocks lie 1.6 mm apart
    with pytest.raises(RecipeError, match=r"metrics\[0\]: .*'nsd'.*tolerance"):
        metric("nsd", tolerance=-1)


def test_nsd_tolerance_is_set_in_the_recipe_and_reported_per_case(tmp_path):
    raw = {"metrics": [{"name": "dice"}, {"name": "nsd", "tolerance": 1.5}]}
    recipe = recipe_from_dict(raw, source="r.yaml")
    assert any(c.name == "nsd" for c in recipe_from_dict({}).metrics)  # a default metric
    fns = assemble(recipe).metrics()
    truth = np.zeros((8, 8, 8), bool)
    truth[2:5, 2:5, 2:5] = True
    pred = np.roll(truth, 1, axis=0)
    row = case_row("lung_001", pred, truth, (1.0, 1.0, 1.0), fns)
    assert row["nsd"] == pytest.approx(_brute_nsd(pred, truth, (1.0, 1.0, 1.0), 1.5))
    assert row["nsd"] != pytest.approx(_brute_nsd(pred, truth, (1.0, 1.0, 1.0), 0.5))
    result = summary({}, [row], [], np.array([0, 0, 0]), list(fns))
    write_results(tmp_path, result)
    assert json.loads((tmp_path / "metrics.json").read_text())["means"]["nsd"] == row["nsd"]
    with open(tmp_path / "per_case.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["nsd"]) == pytest.approx(row["nsd"])
