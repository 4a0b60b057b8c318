"""``lungseg evaluate``: per-case 3D metrics in each case's own geometry, labelled aggregates.

Outputs under the recipe's ``output``: ``metrics.json``, ``per_case.csv``,
``eval_predictions/<case>.nii.gz`` (the masks every number was computed from),
``figures/`` (per-case slices, gallery, Dice bars) and ``loss_curve.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.checkpoint import check_matches, find_best, load_checkpoint
from lungseg.data import open_store, split_cases
from lungseg.errors import DataError
from lungseg.figures import case_view, save_case_figure, save_dice_bars, save_gallery
from lungseg.inference import build_postprocessors, default_device, postprocess, predict_probs
from lungseg.manager import load_registry
from lungseg.metrics import dice_from_counts, overlap
from lungseg.preprocessing import Chain
from lungseg.recipe import Component, Recipe
from lungseg.registry import Registry
from lungseg.report import plot_loss_curve
from lungseg.safety import claim_dir, refuse_existing
from lungseg.volume import Geometry, read_image, read_label, write_mask

#: Metric plugins every evaluation reports; the recipe's ``metrics`` may add others.
REQUIRED_METRICS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95",
    "volume-diff",
    "lesion-recall",
    "fp-lesions",
)

DEFINITIONS = {
    "mean_case_dice": "mean over cases with tumour of the 3D Dice in the scan's own geometry "
    "(prediction mapped back through the inverse preprocessing chain, thresholded, "
    "post-processed) against the original label file",
    "slice_dice": "mean 2D Dice over the preprocessed (resized) slices that contain tumour, "
    "before post-processing",
    "pooled_dice": "one 3D Dice over all voxels of all cases of the split pooled together, "
    "in each scan's own geometry",
    "means": "per metric plugin: mean over cases with tumour, undefined (nan) values left out",
    "no_tumour_cases": "cases whose label is empty: count, and false-positive volume in ml "
    "(predicted voxels x voxel volume prod(spacing)/1000) and false-positive lesions",
}


def _splits(recipe: Recipe, cases: list[str]) -> dict[str, list[str]]:
    path = Path(recipe.output) / "split.json"
    if path.is_file():
        return json.loads(path.read_text())
    s = recipe.split
    return split_cases(cases, s.val_fraction, s.test_fraction, s.seed)


def output_folder(recipe: Recipe, split: str) -> Path:
    """Where ``evaluate`` writes a split's results: the run folder for ``val``, else its own."""
    out = Path(recipe.output)
    return out if split == "val" else out / f"evaluate_{split}"


def _nanmean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _metric_fns(recipe: Recipe, registry: Registry) -> dict[str, Any]:
    comps = {c.name: (c, f"metrics[{i}]") for i, c in enumerate(recipe.metrics)}
    for name in REQUIRED_METRICS:
        comps.setdefault(name, (Component(name), f"metrics ({name}, always reported)"))
    return {n: registry.create("metric", c.name, c.params, key) for n, (c, key) in comps.items()}


def evaluate(
    recipe: Recipe,
    checkpoint: str | os.PathLike | None = None,
    split: str = "val",
    *,
    figures: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of the store; write ``metrics.json`` and figures.

    Per case, slice probabilities (flip-averaged if ``evaluate.tta``) are mapped back
    through the inverse of the checkpoint's preprocessing chain, thresholded at
    ``evaluate.threshold``, post-processed by ``evaluate.postprocess`` and compared with the
    original label file by every metric plugin (see :data:`REQUIRED_METRICS`).

    Args:
        recipe: the evaluation recipe (store, output, split, ``evaluate`` settings).
        checkpoint: defaults to the best checkpoint of ``recipe.output``.
        split: ``val``, ``test`` or ``train``. Validation results go to the run folder
            (``recipe.output``); any other split to its own ``<output>/evaluate_<split>/``,
            so the validation results stay in place.
        figures: write the per-case figures, gallery and Dice bar chart.
        overwrite: replace the results of an earlier evaluation of the same split.

    Returns:
        The content of ``metrics.json``.

    Raises:
        DataError: the store was made with a different chain than the checkpoint's, or the
            split is empty.
        CheckpointError: no or unsafe checkpoint, or one trained with another chain or model
            than ``recipe``.
        OutputError: the results exist and ``overwrite`` is false, or the output folder
            holds files lungseg did not make.
    """
    ckpt = Path(checkpoint) if checkpoint else find_best(recipe.output)
    module, trained = load_checkpoint(ckpt)
    check_matches(ckpt, trained, recipe)  # never silently another run's network or chain
    store = open_store(recipe)
    if store.root_attrs().get("preprocess_hash") != trained.preprocess_hash():
        raise DataError(
            f"{store.path}: preprocessed differently from {ckpt}'s recipe; "
            "point `store.path` at the store it was trained on"
        )
    registry = load_registry()
    chain = Chain.from_components(trained.preprocess, registry)
    metric_fns = _metric_fns(recipe, registry)
    cfg = recipe.evaluate
    posts = build_postprocessors(cfg.postprocess, registry)
    case_ids = _splits(recipe, store.cases()).get(split) or []
    if not case_ids:
        raise DataError(f"split {split!r} has no cases; check `split` in the recipe")
    out = output_folder(recipe, split)
    refuse_existing([out / "metrics.json", out / "per_case.csv"], overwrite, "evaluation result")
    claim_dir(recipe.output, "run", role="output")
    if out != Path(recipe.output):
        claim_dir(out, "evaluation", role=f"{split} evaluation folder")
    device = default_device()
    per_case, slice_scores, views = [], [], []
    pooled = np.zeros(3, dtype=np.int64)
    for case_id in case_ids:
        slices, slice_masks = store.read_case(case_id)
        probs = predict_probs(module.model, slices, cfg.batch_size, device, tta=cfg.tta)
        for k in np.flatnonzero(slice_masks.reshape(len(slice_masks), -1).any(axis=1)):
            hit = probs[k] >= cfg.threshold
            slice_scores.append(dice_from_counts(*overlap(hit, slice_masks[k] > 0)))
        attrs = store.attrs(case_id)
        geometry = Geometry.from_attrs(attrs["geometry"])
        back = chain.invert(np.moveaxis(probs, 0, 2), attrs["trace"], is_label=False)
        truth = read_label(attrs["label_path"], geometry) > 0
        image = read_image(attrs["image_path"])[0] if (posts or figures) else None
        pred = postprocess(back >= cfg.threshold, image, geometry.spacing, posts)
        row = _case_row(case_id, pred, truth, geometry.spacing, metric_fns)
        pooled += overlap(pred, truth)
        per_case.append(row)
        if cfg.save_predictions:
            write_mask(out / "eval_predictions" / f"{case_id}.nii.gz", pred, attrs["image_path"])
        if figures:
            view = case_view(case_id, image, pred, geometry.affine, truth, _json(row["dice"]))
            save_case_figure(view, out / "figures" / "cases" / f"{case_id}.png")
            views.append(view)
    result = _summary(split, ckpt, recipe, trained, per_case, slice_scores, pooled, metric_fns)
    _write(out, result, views if figures else None)
    return result


def _case_row(
    case_id: str, pred: np.ndarray, truth: np.ndarray, spacing: tuple, metric_fns: dict
) -> dict[str, Any]:
    inter, p, t = overlap(pred, truth)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    row: dict[str, Any] = {"case": case_id, "dice": dice_from_counts(inter, p, t)}
    row.update({name: float(fn(pred, truth, spacing)) for name, fn in metric_fns.items()})
    row["dice"] = dice_from_counts(inter, p, t)  # the primary metric, by its one definition
    row.update(
        tumour_voxels=t,
        predicted_voxels=p,
        tumour_ml=t * voxel_ml,
        predicted_ml=p * voxel_ml,
        fp_volume_ml=(p - inter) * voxel_ml,
    )
    return row


def _summary(
    split: str,
    ckpt: Path,
    recipe: Recipe,
    trained: Recipe,
    per_case: list[dict[str, Any]],
    slice_scores: list[float],
    pooled: np.ndarray,
    metric_fns: dict,
) -> dict[str, Any]:
    tumour = [r for r in per_case if r["tumour_voxels"] > 0]
    empty = [r for r in per_case if r["tumour_voxels"] == 0]
    return {
        "split": split,
        "checkpoint": str(ckpt),
        "threshold": recipe.evaluate.threshold,
        "mean_case_dice": _nanmean([r["dice"] for r in tumour]),
        "mean_case_dice_definition": DEFINITIONS["mean_case_dice"],
        "cases_with_tumour": len(tumour),
        "slice_dice": _nanmean(slice_scores),
        "slice_dice_definition": DEFINITIONS["slice_dice"],
        "pooled_dice": _json(dice_from_counts(*pooled.tolist())),
        "pooled_dice_definition": DEFINITIONS["pooled_dice"],
        "means": {name: _nanmean([r[name] for r in tumour]) for name in metric_fns},
        "means_definition": DEFINITIONS["means"],
        "no_tumour_cases": {
            "count": len(empty),
            "mean_fp_volume_ml": _nanmean([r["fp_volume_ml"] for r in empty]),
            "total_fp_volume_ml": float(sum(r["fp_volume_ml"] for r in empty)),
            "mean_fp_lesions": _nanmean([r["fp-lesions"] for r in empty]),
        },
        "no_tumour_cases_definition": DEFINITIONS["no_tumour_cases"],
        "evaluate": {
            "threshold": recipe.evaluate.threshold,
            "tta": recipe.evaluate.tta,
            "postprocess": [c.to_dict() for c in recipe.evaluate.postprocess],
        },
        "per_case": [{k: _json(v) for k, v in row.items()} for row in per_case],
        "recipe": trained.to_dict(),
    }


def _json(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def _write(out: Path, result: dict[str, Any], views: list | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    rows = result["per_case"]
    with open(out / "per_case.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if views is not None:
        save_gallery(views, out / "figures" / "gallery.png")
        save_dice_bars(rows, out / "figures" / "dice_per_case.png")
    log = out / "logs" / "metrics.csv"
    if log.is_file():
        plot_loss_curve(log, out / "loss_curve.png")
