"""Figures: per-case slices in a lung window, galleries, Dice bars, and the loss curve.

Slices are shown in the radiological convention (patient's right on the viewer's left,
anterior at the top) whatever the file's orientation, with true contours in green and
predicted contours in red. The loss curve is drawn from Lightning's CSV training log.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from nibabel import orientations as ornt

from lungseg.core.recipe import MONITOR

#: Lung window: width 1500 HU, level -600 HU.
LUNG_WINDOW = (-600.0 - 750.0, -600.0 + 750.0)
TRUE_COLOUR, PRED_COLOUR = "#00e000", "#ff2020"


@dataclass
class CaseView:
    """One axial slice of a case, ready to draw (arrays ``(rows, columns)``, display order).

    Attributes:
        case: case id or file name.
        index: the slice's index along the canonical (inferior to superior) axis.
        image: Hounsfield units.
        truth: true tumour mask, or ``None`` (unlabelled scans).
        pred: predicted tumour mask.
        aspect: row spacing / column spacing, for square pixels in mm.
        dice: the case's 3D Dice, or ``None``.
    """

    case: str
    index: int
    image: np.ndarray
    truth: np.ndarray | None
    pred: np.ndarray
    aspect: float
    dice: float | None = None


def case_view(
    case: str,
    image: np.ndarray,
    pred: np.ndarray,
    affine: np.ndarray,
    truth: np.ndarray | None = None,
    dice: float | None = None,
) -> CaseView:
    """Pick the axial slice with the most true tumour (else most predicted, else the middle).

    Args:
        case: name shown in titles.
        image: ``(X, Y, Z)`` Hounsfield units in the file's orientation.
        pred: predicted mask of the same shape.
        affine: the file's voxel-to-world affine.
        truth: true mask of the same shape, or ``None``.
        dice: the case's 3D Dice, for titles and galleries.
    """
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt("RAS"))
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    spacing = [spacing[int(axis)] for axis in transform[:, 0]]  # along the RAS axes

    def ras(a: np.ndarray) -> np.ndarray:
        return ornt.apply_orientation(np.asarray(a), transform)

    img, prd = ras(image), ras(pred) > 0
    tru = None if truth is None else ras(truth) > 0
    counts = (tru if tru is not None and tru.any() else prd).sum(axis=(0, 1))
    k = int(np.argmax(counts)) if counts.any() else img.shape[2] // 2

    def display(a: np.ndarray) -> np.ndarray:  # rows: anterior first; columns: right first
        return a[:, :, k].T[::-1, ::-1]

    return CaseView(
        case,
        k,
        display(img),
        None if tru is None else display(tru),
        display(prd),
        float(spacing[1] / spacing[0]),
        dice,
    )


def _draw(ax: plt.Axes, view: CaseView, title: str | None = None) -> None:
    ax.imshow(view.image, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1])
    ax.set_aspect(view.aspect)
    for mask, colour in ((view.truth, TRUE_COLOUR), (view.pred, PRED_COLOUR)):
        if mask is not None and mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.2)
    dice = "" if view.dice is None else f"  Dice {view.dice:.3f}"
    ax.set_title(title or f"{view.case}  slice {view.index}{dice}", fontsize=9)
    ax.set_axis_off()


def _legend(fig: plt.Figure, with_truth: bool) -> None:
    handles = [Line2D([], [], color=PRED_COLOUR, label="predicted")]
    if with_truth:
        handles.insert(0, Line2D([], [], color=TRUE_COLOUR, label="true"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


def _save(fig: plt.Figure, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def save_case_figure(view: CaseView, out: str | os.PathLike) -> Path:
    """One case's slice with most tumour, lung window (W 1500 / L -600), both contours."""
    fig, ax = plt.subplots(figsize=(5, 5.4))
    _draw(ax, view)
    _legend(fig, view.truth is not None)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out)


def save_gallery(views: list[CaseView], out: str | os.PathLike, count: int = 3) -> Path | None:
    """The ``count`` best and ``count`` worst cases by 3D Dice (cases with a Dice only).

    Returns:
        The PNG path, or ``None`` when no case has a Dice.
    """
    scored = sorted((v for v in views if v.dice is not None), key=lambda v: -v.dice)
    if not scored:
        return None
    best = scored[:count]
    worst = scored[::-1][: min(count, max(len(scored) - len(best), 0))]
    rows = [("best", best)] + ([("worst", worst)] if worst else [])
    fig, axes = plt.subplots(len(rows), count, figsize=(3.2 * count, 3.5 * len(rows)))
    axes = np.atleast_2d(axes)
    for r, (label, group) in enumerate(rows):
        for c in range(count):
            if c < len(group):
                _draw(axes[r, c], group[c], f"{label}: {group[c].case}  Dice {group[c].dice:.3f}")
            else:
                axes[r, c].set_axis_off()
    _legend(fig, True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out)


def save_dice_bars(rows: list[dict], out: str | os.PathLike) -> Path:
    """Per-case 3D Dice, sorted, for cases with tumour; the mean drawn as a line."""
    scored = sorted(
        ((r["case"], r["dice"]) for r in rows if r["tumour_voxels"] > 0 and r["dice"] is not None),
        key=lambda item: item[1],
    )
    skipped = len(rows) - len(scored)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(scored) + 2), 3.6))
    if scored:
        names, values = zip(*scored, strict=True)
        ax.bar(range(len(values)), values, color="C0")
        ax.axhline(float(np.mean(values)), color="C3", ls="--", label=f"mean {np.mean(values):.3f}")
        ax.set_xticks(range(len(values)), names, rotation=90, fontsize=7)
        ax.legend(fontsize=8)
    note = f" ({skipped} case(s) without tumour not shown)" if skipped else ""
    ax.set(ylim=(0, 1), ylabel="3D Dice", title=f"Per-case 3D Dice{note}")
    fig.tight_layout()
    return _save(fig, out)


def read_epoch_log(path: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Per-epoch values of every logged metric in Lightning's ``metrics.csv``.

    Returns:
        ``{metric: {epoch: value}}``; rows without an epoch are skipped.
    """
    values: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    values[key][epoch] = float(value)
    return dict(values)


def plot_loss_curve(
    log_csv: str | os.PathLike, out: str | os.PathLike, *, loss_name: str | None = None
) -> Path:
    """``loss_curve.png``: training and validation loss per epoch, and validation Dice.

    Args:
        log_csv: Lightning's ``metrics.csv`` (``<output>/logs/metrics.csv``).
        out: the PNG to write (its folder is created).
        loss_name: the recipe's loss plugin (``recipe.loss.name``), shown on the loss axis.
    """
    log = read_epoch_log(log_csv)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        if key in log:
            epochs = sorted(log[key])
            ax_loss.plot([e + 1 for e in epochs], [log[key][e] for e in epochs], "o-", label=label)
    ylabel = f"loss ({loss_name})" if loss_name else "loss"
    ax_loss.set(xlabel="epoch", ylabel=ylabel, title="Loss per epoch")
    ax_loss.legend()
    if MONITOR in log:
        epochs = sorted(log[MONITOR])
        ax_dice.plot([e + 1 for e in epochs], [log[MONITOR][e] for e in epochs], "o-", color="C2")
    ax_dice.set(
        xlabel="epoch", ylabel="Dice", title="Validation Dice (pooled, 2D slices)", ylim=(0, 1)
    )
    fig.tight_layout()
    return _save(fig, out)
