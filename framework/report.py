"""Figures: loss and Dice curves per epoch from the CSV training log."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_epoch_log(path: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Per-epoch values of every logged metric in Lightning's ``metrics.csv``."""
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


def plot_loss_curve(log_csv: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``loss_curve.png``: training and validation loss per epoch, and validation Dice."""
    log = read_epoch_log(log_csv)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        if key in log:
            epochs = sorted(log[key])
            ax_loss.plot([e + 1 for e in epochs], [log[key][e] for e in epochs], "o-", label=label)
    ax_loss.set(xlabel="epoch", ylabel="BCE loss", title="Loss per epoch")
    ax_loss.legend()
    if "val_dice" in log:
        epochs = sorted(log["val_dice"])
        ax_dice.plot(
            [e + 1 for e in epochs], [log["val_dice"][e] for e in epochs], "o-", color="C2"
        )
    ax_dice.set(
        xlabel="epoch", ylabel="Dice", title="Validation Dice (pooled, 2D slices)", ylim=(0, 1)
    )
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
