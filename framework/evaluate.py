"""``lungseg evaluate``: per-case 3D Dice in each case's own geometry, plus slice Dice."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.checkpoint import find_best, load_checkpoint
from lungseg.data import open_store, split_cases
from lungseg.errors import DataError
from lungseg.inference import default_device, predict_probs
from lungseg.manager import load_registry
from lungseg.metrics import dice_from_counts, overlap
from lungseg.preprocessing import Chain
from lungseg.recipe import Recipe
from lungseg.report import plot_loss_curve
from lungseg.volume import Geometry, read_label


def _splits(recipe: Recipe, cases: list[str]) -> dict[str, list[str]]:
    path = Path(recipe.output) / "split.json"
    if path.is_file():
        return json.loads(path.read_text())
    s = recipe.split
    return split_cases(cases, s.val_fraction, s.test_fraction, s.seed)


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def evaluate(
    recipe: Recipe, checkpoint: str | os.PathLike | None = None, split: str = "val"
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of the store; write ``metrics.json`` and figures.

    Per case, slice probabilities are mapped back through the inverse of the checkpoint's
    preprocessing chain, thresholded at ``evaluate.threshold`` and compared with the
    original label file: the per-case 3D Dice the MSD challenge reports. ``slice_dice`` is
    the mean 2D Dice over preprocessed slices that contain tumour.

    Raises:
        DataError: the store was made with a different chain than the checkpoint's, or the
            split is empty.
    """
    ckpt = Path(checkpoint) if checkpoint else find_best(recipe.output)
    module, trained = load_checkpoint(ckpt)
    store = open_store(recipe)
    if store.root_attrs().get("preprocess_hash") != trained.preprocess_hash():
        raise DataError(
            f"{store.path}: preprocessed differently from {ckpt}'s recipe; "
            "point `store.path` at the store it was trained on"
        )
    chain = Chain.from_components(trained.preprocess, load_registry())
    metric_fns = {
        m.name: load_registry().create("metric", m.name, m.params, f"metrics[{i}]")
        for i, m in enumerate(recipe.metrics)
    }
    case_ids = _splits(recipe, store.cases()).get(split) or []
    if not case_ids:
        raise DataError(f"split {split!r} has no cases; check `split` in the recipe")
    threshold = recipe.evaluate.threshold
    device = default_device()
    per_case, slice_scores = [], []
    for case_id in case_ids:
        image, mask = store.read_case(case_id)
        probs = predict_probs(module.model, image, recipe.evaluate.batch_size, device)
        for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
            slice_scores.append(dice_from_counts(*overlap(probs[k] >= threshold, mask[k] > 0)))
        attrs = store.attrs(case_id)
        geometry = Geometry.from_attrs(attrs["geometry"])
        back = chain.invert(np.moveaxis(probs, 0, 2), attrs["trace"], is_label=False)
        pred = back >= threshold
        truth = read_label(attrs["label_path"], geometry) > 0
        row = {"case": case_id}
        row.update({name: fn(pred, truth, geometry.spacing) for name, fn in metric_fns.items()})
        inter, p, t = overlap(pred, truth)
        row["dice"] = dice_from_counts(inter, p, t)
        row["tumour_voxels"] = t
        row["predicted_voxels"] = p
        per_case.append(row)
    tumour_cases = [r["dice"] for r in per_case if r["tumour_voxels"] > 0]
    result = {
        "split": split,
        "checkpoint": str(ckpt),
        "threshold": threshold,
        "mean_case_dice": _nanmean(tumour_cases),
        "mean_case_dice_definition": (
            "mean over cases with tumour of the 3D Dice in the scan's own geometry"
        ),
        "slice_dice": _nanmean(slice_scores),
        "slice_dice_definition": "mean 2D Dice over preprocessed slices that contain tumour",
        "per_case": [{k: _json(v) for k, v in row.items()} for row in per_case],
        "recipe": trained.to_dict(),
    }
    _write(recipe, result)
    return result


def _json(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _write(recipe: Recipe, result: dict[str, Any]) -> None:
    out = Path(recipe.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    rows = result["per_case"]
    with open(out / "per_case.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log = out / "logs" / "metrics.csv"
    if log.is_file():
        plot_loss_curve(log, out / "loss_curve.png")
