"""Per-case figures: slice choice, radiological orientation, both contours drawn."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np

from lungseg.figures import (
    LUNG_WINDOW,
    PRED_COLOUR,
    TRUE_COLOUR,
    case_view,
    save_case_figure,
    save_dice_bars,
    save_gallery,
)

LPS_LIKE = np.diag([-0.8, -0.8, 2.0, 1.0])  # how the synthetic scans are stored


def _case(shape=(24, 20, 10)):
    rng = np.random.default_rng(0)
    image = rng.normal(-800, 50, shape).astype(np.float32)
    truth = np.zeros(shape, bool)
    truth[5:9, 6:10, 3] = True
    truth[4:12, 5:13, 6] = True  # the slice with most tumour
    pred = np.zeros(shape, bool)
    pred[6:14, 5:13, 6] = True
    return image, truth, pred


def test_view_picks_the_slice_with_most_tumour_in_radiological_order():
    image, truth, pred = _case()
    view = case_view("a", image, pred, LPS_LIKE, truth, 0.5)
    assert view.index == 6 and view.truth.sum() == 64
    # stored L->R, P->A (LPS-like); displayed patient-right on the left, anterior on top
    flipped = np.diag([0.8, 0.8, 2.0, 1.0])
    other = case_view("a", image[::-1, ::-1], pred[::-1, ::-1], flipped, truth[::-1, ::-1])
    np.testing.assert_array_equal(view.image, other.image)
    np.testing.assert_array_equal(view.truth, other.truth)
    assert view.image.shape == (20, 24)  # rows: anterior-posterior, columns: right-left
    # no true tumour: the slice with most predicted tumour
    assert case_view("b", image, pred, LPS_LIKE, np.zeros_like(truth)).index == 6


def _has_colour(png: np.ndarray, hex_colour: str) -> bool:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return bool((np.abs(png[..., :3] - rgb).max(axis=-1) < 0.08).sum() > 20)


def test_case_figure_draws_true_and_predicted_contours(tmp_path):
    image, truth, pred = _case()
    image[:] = LUNG_WINDOW[0] + 100  # a dark, contour-free background
    path = save_case_figure(case_view("a", image, pred, LPS_LIKE, truth, 0.7), tmp_path / "a.png")
    png = mpimg.imread(path)
    assert _has_colour(png, TRUE_COLOUR) and _has_colour(png, PRED_COLOUR)
    unlabelled = save_case_figure(case_view("b", image, pred, LPS_LIKE), tmp_path / "b.png")
    assert not _has_colour(mpimg.imread(unlabelled), TRUE_COLOUR)


def test_gallery_and_bars(tmp_path):
    image, truth, pred = _case()
    views = [case_view(f"c{i}", image, pred, LPS_LIKE, truth, d) for i, d in enumerate([0.9, 0.1])]
    assert save_gallery(views, tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert save_gallery([case_view("x", image, pred, LPS_LIKE)], tmp_path / "n.png") is None
    rows = [
        {"case": "c0", "dice": 0.9, "tumour_voxels": 10},
        {"case": "c1", "dice": 0.1, "tumour_voxels": 10},
        {"case": "c2", "dice": None, "tumour_voxels": 0},
    ]
    assert save_dice_bars(rows, tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
