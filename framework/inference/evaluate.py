"""``lungseg evaluate``: per-case 3D metrics in each case's own geometry, labelled aggregates.

Outputs under the recipe's ``output``: ``metrics.json``, ``per_case.csv``,
``eval_predictions/<case>.nii.gz`` (the masks every number was computed from),
``figures/`` (per-case slices, gallery, Dice bars) and ``loss_curve.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.build import Parts, assemble
from lungseg.core.errors import DataError
from lungseg.core.recipe import Recipe
from lungseg.core.safety import claim_dir, refuse_existing
from lungseg.data.volume import Geometry, read_image, read_label, write_mask
from lungseg.inference.figures import (
    case_view,
    plot_loss_curve,
    save_case_figure,
    save_dice_bars,
    save_gallery,
)
from lungseg.inference.metrics import dice_from_counts, overlap
from lungseg.inference.predictor import Predictor
from lungseg.inference.scoring import case_row, check_primary, summary, to_json, write_results
from lungseg.training.checkpoint import check_matches, find_best
from lungseg.training.dataset import open_store, split_cases


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


def evaluate(
    recipe: Recipe | Parts,
    checkpoint: str | os.PathLike | None = None,
    split: str = "val",
    *,
    figures: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of the store; write ``metrics.json`` and figures.

    Each case's stored slices go through the checkpoint's
    :class:`~lungseg.inference.predictor.Predictor` (the same path ``lungseg predict`` takes:
    network, inverse chain, threshold at ``evaluate.threshold``, ``evaluate.postprocess``);
    evaluation adds only the scoring, by every metric plugin of the recipe's ``metrics``
    against the original label file.

    Args:
        recipe: the evaluation recipe (store, output, split, ``evaluate``, ``metrics``), or
            its assembled parts.
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
        RecipeError: ``metrics`` lacks ``dice``.
        OutputError: the results exist and ``overwrite`` is false, or the output folder
            holds files lungseg did not make.
    """
    parts = assemble(recipe)
    recipe = parts.recipe
    metric_fns = parts.metrics()
    check_primary(metric_fns, recipe.source_file)
    out = output_folder(recipe, split)
    refuse_existing([out / "metrics.json", out / "per_case.csv"], overwrite, "evaluation result")
    ckpt = Path(checkpoint) if checkpoint else find_best(recipe.output)
    cfg = recipe.evaluate
    predictor, trained = Predictor.from_checkpoint(
        ckpt,
        threshold=cfg.threshold,
        batch_size=cfg.batch_size,
        tta=cfg.tta,
        postprocessors=cfg.postprocess,
    )
    check_matches(ckpt, trained, recipe)  # never silently another run's network or chain
    store = open_store(recipe)
    if store.root_attrs().get("preprocess_hash") != trained.preprocess_hash():
        raise DataError(
            f"{store.path}: preprocessed differently from {ckpt}'s recipe; "
            "point `store.path` at the store it was trained on"
        )
    case_ids = _splits(recipe, store.cases()).get(split) or []
    if not case_ids:
        raise DataError(f"split {split!r} has no cases; check `split` in the recipe")
    claim_dir(recipe.output, "run", role="output")
    if out != Path(recipe.output):
        claim_dir(out, "evaluation", role=f"{split} evaluation folder")
    per_case, slice_scores, views = [], [], []
    pooled = np.zeros(3, dtype=np.int64)
    for case_id in case_ids:
        slices, slice_masks = store.read_case(case_id)
        attrs = store.attrs(case_id)
        geometry = Geometry.from_attrs(attrs["geometry"])
        image = read_image(attrs["image_path"])[0] if (predictor.posts or figures) else None
        result = predictor.stored(slices, attrs["trace"], image, geometry.spacing)
        for k in np.flatnonzero(slice_masks.reshape(len(slice_masks), -1).any(axis=1)):
            hit = result.slice_probs[k] >= cfg.threshold
            slice_scores.append(dice_from_counts(*overlap(hit, slice_masks[k] > 0)))
        pred = result.mask > 0
        truth = read_label(attrs["label_path"], geometry) > 0
        row = case_row(case_id, pred, truth, geometry.spacing, metric_fns)
        pooled += overlap(pred, truth)
        per_case.append(row)
        if cfg.save_predictions:
            write_mask(out / "eval_predictions" / f"{case_id}.nii.gz", pred, attrs["image_path"])
        if figures:
            view = case_view(case_id, image, pred, geometry.affine, truth, to_json(row["dice"]))
            save_case_figure(view, out / "figures" / "cases" / f"{case_id}.png")
            views.append(view)
    head = {
        "split": split,
        "checkpoint": str(ckpt),
        "threshold": cfg.threshold,
        "evaluate": {
            "threshold": cfg.threshold,
            "tta": cfg.tta,
            "postprocess": [c.to_dict() for c in cfg.postprocess],
        },
    }
    metrics = summary(head, per_case, slice_scores, pooled, list(metric_fns))
    metrics["recipe"] = trained.to_dict()
    write_results(out, metrics)
    if figures:
        save_gallery(views, out / "figures" / "gallery.png")
        save_dice_bars(metrics["per_case"], out / "figures" / "dice_per_case.png")
    log = out / "logs" / "metrics.csv"
    if log.is_file():
        plot_loss_curve(log, out / "loss_curve.png", loss_name=recipe.loss.name)
    return metrics
