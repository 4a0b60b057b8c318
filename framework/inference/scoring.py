"""Scoring an evaluation: per-case rows from the metric plugins, labelled aggregates, files.

The core computes no metric itself: every per-case number comes from a metric plugin of the
recipe's ``metrics`` list (plus voxel counts and volumes); :data:`PRIMARY` names the one whose
mean over cases with tumour is ``mean_case_dice``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.errors import RecipeError
from lungseg.inference.metrics import dice_from_counts, overlap

PRIMARY = "dice"
"""The metric plugin behind ``mean_case_dice``: a recipe's ``metrics`` must list it."""

DEFINITIONS = {
    "mean_case_dice": "mean over cases with tumour of the 3D Dice (metric plugin 'dice') in "
    "the scan's own geometry (prediction mapped back through the inverse preprocessing chain, "
    "thresholded, post-processed) against the original label file",
    "slice_dice": "mean 2D Dice over the preprocessed (resized) slices that contain tumour, "
    "before post-processing",
    "pooled_dice": "one 3D Dice over all voxels of all cases of the split pooled together, "
    "in each scan's own geometry",
    "means": "per metric plugin: mean over cases with tumour, undefined (nan) values left out",
    "no_tumour_cases": "cases whose label is empty: count, false-positive volume in ml "
    "(predicted voxels x voxel volume prod(spacing)/1000), and each metric plugin's mean",
    "out_of_fold": "k-fold cross-validation: every case that is not a test case is scored "
    "once, by the model of the fold that validated on it (never trained on it); per_case "
    "names that fold",
    "fold_ensemble": "every case is scored by the mean probability of every fold's model",
}


def check_primary(metric_fns: dict[str, Any], source: str) -> None:
    """Refuse a recipe whose ``metrics`` lack :data:`PRIMARY`.

    Raises:
        RecipeError: naming the recipe file and the key.
    """
    if PRIMARY not in metric_fns:
        raise RecipeError(
            f"{source}: metrics: list {{name: {PRIMARY}}}; evaluate reports mean_case_dice "
            f"from it (listed now: {', '.join(metric_fns) or 'none'})"
        )


def case_row(
    case_id: str, pred: np.ndarray, truth: np.ndarray, spacing: tuple, metric_fns: dict
) -> dict[str, Any]:
    """One case: every metric plugin's value, voxel counts and volumes in ml."""
    inter, p, t = overlap(pred, truth)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    row: dict[str, Any] = {"case": case_id}
    row.update({name: float(fn(pred, truth, spacing)) for name, fn in metric_fns.items()})
    row.update(
        tumour_voxels=t,
        predicted_voxels=p,
        tumour_ml=t * voxel_ml,
        predicted_ml=p * voxel_ml,
        fp_volume_ml=(p - inter) * voxel_ml,
    )
    return row


def nanmean(values: list[float | None]) -> float | None:
    """Mean of the defined values (``None`` and ``nan`` left out); ``None`` if there are none."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def summary(
    head: dict[str, Any],
    per_case: list[dict[str, Any]],
    slice_scores: list[float],
    pooled: np.ndarray,
    metric_names: list[str],
) -> dict[str, Any]:
    """The content of ``metrics.json``: ``head`` (split, checkpoint, settings...) first."""
    tumour = [r for r in per_case if r["tumour_voxels"] > 0]
    empty = [r for r in per_case if r["tumour_voxels"] == 0]
    return {
        **head,
        "mean_case_dice": nanmean([r[PRIMARY] for r in tumour]),
        "mean_case_dice_definition": DEFINITIONS["mean_case_dice"],
        "cases_with_tumour": len(tumour),
        "slice_dice": nanmean(slice_scores),
        "slice_dice_definition": DEFINITIONS["slice_dice"],
        "pooled_dice": to_json(dice_from_counts(*pooled.tolist())),
        "pooled_dice_definition": DEFINITIONS["pooled_dice"],
        "means": {name: nanmean([r[name] for r in tumour]) for name in metric_names},
        "means_definition": DEFINITIONS["means"],
        "no_tumour_cases": {
            "count": len(empty),
            "mean_fp_volume_ml": nanmean([r["fp_volume_ml"] for r in empty]),
            "total_fp_volume_ml": float(sum(r["fp_volume_ml"] for r in empty)),
            "means": {name: nanmean([r[name] for r in empty]) for name in metric_names},
        },
        "no_tumour_cases_definition": DEFINITIONS["no_tumour_cases"],
        "per_case": [{k: to_json(v) for k, v in row.items()} for row in per_case],
    }


def to_json(value: Any) -> Any:
    """A float for JSON: ``nan`` becomes ``None``."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def write_results(out: Path, result: dict[str, Any]) -> None:
    """``metrics.json`` and ``per_case.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    rows = result["per_case"]
    with open(out / "per_case.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
