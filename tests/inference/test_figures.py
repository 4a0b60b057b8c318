"""Per-case figures: slice choice, radiological orientation, both contours drawn."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from scipy import ndimage

from lungseg.inference.figures import (
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


def colour_mask(png: np.ndarray, hex_colour: str, tol: float = 0.08) -> np.ndarray:
    """Pixels of an RGB(A) float image within ``tol`` of ``hex_colour`` in every channel."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return np.abs(png[..., :3] - rgb).max(axis=-1) < tol


def has_colour(png: np.ndarray, hex_colour: str) -> bool:
    return bool(colour_mask(png, hex_colour).sum() > 20)


def panels(png: np.ndarray) -> list[tuple[slice, slice]]:
    """Bounding boxes of the drawn slices: large non-white regions, top-left first.

    Titles, tick labels and the legend are small; a slice panel covers several percent of
    the figure. Bright tissue inside a darker border is filled in, not counted apart.
    """
    drawn = ndimage.binary_fill_holes(png[..., :3].min(axis=-1) < 0.9)
    labels, count = ndimage.label(drawn)
    sizes = ndimage.sum(drawn, labels, range(1, count + 1))
    boxes = ndimage.find_objects(labels)
    big = [boxes[i] for i in range(count) if sizes[i] > 0.02 * drawn.size]
    return sorted(big, key=lambda box: (box[0].start // 20, box[1].start))


def check_contour(panel: np.ndarray, hex_colour: str, mask: np.ndarray | None) -> None:
    """The colour's contour is in the panel exactly when the mask is non-empty, around it.

    The contour's bounding box, as a fraction of the panel, must match the mask's (pixel
    edges) within one mask pixel, except on sides where the mask reaches the slice's edge:
    no contour is drawn along the edge, so there it may stop short (but never go beyond).
    """
    drawn = colour_mask(panel, hex_colour)
    if mask is None or not mask.any():
        assert drawn.sum() == 0, f"{hex_colour} drawn for an empty mask"
        return
    assert drawn.sum() > 20, f"{hex_colour} missing for a mask of {int(mask.sum())} pixels"
    for axis in (0, 1):
        got = np.nonzero(drawn.any(axis=1 - axis))[0]
        want = np.nonzero(mask.any(axis=1 - axis))[0]
        n_got, n_want = panel.shape[axis], mask.shape[axis]
        lo, hi = got[0] / n_got, (got[-1] + 1) / n_got
        want_lo, want_hi = want[0] / n_want, (want[-1] + 1) / n_want
        assert want_lo - 1 / n_want <= lo and hi <= want_hi + 1 / n_want
        if want[0] > 0:
            assert lo == pytest.approx(want_lo, abs=1 / n_want)
        if want[-1] < n_want - 1:
            assert hi == pytest.approx(want_hi, abs=1 / n_want)


def test_case_figure_draws_true_and_predicted_contours_where_the_masks_are(tmp_path):
    image, truth, pred = _case()
    image[:] = LUNG_WINDOW[0] + 100  # a dark, contour-free background
    view = case_view("a", image, pred, LPS_LIKE, truth, 0.7)
    png = mpimg.imread(save_case_figure(view, tmp_path / "a.png"))
    assert has_colour(png, TRUE_COLOUR) and has_colour(png, PRED_COLOUR)
    (box,) = panels(png)
    assert (box[0].stop - box[0].start) / (box[1].stop - box[1].start) == pytest.approx(
        20 / 24, abs=0.02
    )  # the slice's shape: 20 rows (anterior-posterior) by 24 columns (right-left)
    check_contour(png[box], PRED_COLOUR, view.pred)
    check_contour(png[box], TRUE_COLOUR, view.truth)

    unlabelled = save_case_figure(case_view("b", image, pred, LPS_LIKE), tmp_path / "b.png")
    assert not has_colour(mpimg.imread(unlabelled), TRUE_COLOUR)

    empty = case_view("c", image, np.zeros_like(pred), LPS_LIKE, truth, 0.0)
    png = mpimg.imread(save_case_figure(empty, tmp_path / "c.png"))
    (box,) = panels(png)
    check_contour(png[box], PRED_COLOUR, empty.pred)  # no predicted contour at all
    check_contour(png[box], TRUE_COLOUR, empty.truth)
    assert has_colour(png, PRED_COLOUR)  # the legend still names it, outside the slice


def test_gallery_shows_best_and_worst_cases(tmp_path):
    image, truth, pred = _case()
    image[:] = LUNG_WINDOW[0] + 100
    dices = [0.9, 0.1, 0.5, 0.6, 0.7, 0.2, 0.3]
    views = [case_view(f"c{i}", image, pred, LPS_LIKE, truth, d) for i, d in enumerate(dices)]
    two = mpimg.imread(save_gallery(views[:2], tmp_path / "two.png"))
    assert len(panels(two)) == 2  # one row of three places, the third empty
    shown = panels(mpimg.imread(save_gallery(views, tmp_path / "all.png")))
    assert len(shown) == 6  # three best, three worst; the middle one (0.5) left out
    png = mpimg.imread(tmp_path / "all.png")
    for box in shown:
        check_contour(png[box], PRED_COLOUR, views[0].pred)
        check_contour(png[box], TRUE_COLOUR, views[0].truth)
    without_dice = [case_view("x", image, pred, LPS_LIKE)]
    assert save_gallery(without_dice, tmp_path / "n.png") is None
    assert not (tmp_path / "n.png").exists()


def bars(png: np.ndarray) -> list[int]:
    """Heights in pixels of the bars of a Dice chart, left to right."""
    blue = colour_mask(png, "#1f77b4")  # matplotlib's C0
    labels, _ = ndimage.label(blue)
    boxes = [box for box in ndimage.find_objects(labels) if (labels[box] > 0).sum() > 50]
    return [box[0].stop - box[0].start for box in sorted(boxes, key=lambda b: b[1].start)]


def test_dice_bars_draw_one_sorted_bar_per_case_with_tumour(tmp_path):
    rows = [
        {"case": "c0", "dice": 0.9, "tumour_voxels": 10},
        {"case": "c1", "dice": 0.1, "tumour_voxels": 10},
        {"case": "c2", "dice": None, "tumour_voxels": 0},
    ]
    png = mpimg.imread(save_dice_bars(rows, tmp_path / "bars.png"))
    low, high = bars(png)  # sorted by Dice; the case without tumour has none
    assert high / low == pytest.approx(0.9 / 0.1, rel=0.1)
    assert has_colour(png, "#d62728")  # the mean line (C3)
    more = [{"case": f"d{i}", "dice": d, "tumour_voxels": 5} for i, d in enumerate([0.8, 0.4, 0.6])]
    heights = bars(mpimg.imread(save_dice_bars(more, tmp_path / "more.png")))
    assert len(heights) == 3 and heights == sorted(heights)
    assert heights[2] / heights[0] == pytest.approx(0.8 / 0.4, rel=0.1)
