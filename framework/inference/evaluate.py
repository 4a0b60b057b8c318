"""``lungseg evaluate``: per-case 3D metrics in each case's own geometry, labelled aggregates.

Outputs under the recipe's ``output``: ``metrics.json``, ``per_case.csv``,
``eval_predictions/<case>.nii.gz`` (the masks every number was computed from),
``figures/`` (per-case slices, gallery, Dice bars) and ``loss_curve.png``.

With ``split.folds`` > 1 the validation is out-of-fold: every case is scored by the fold that
validated on it (:mod:`lungseg.inference.crossval`), the test split by the folds' ensemble.
Validation also measures which post-processing helps (:mod:`lungseg.inference.postselect`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core import console
from lungseg.core.build import Parts, assemble
from lungseg.core.recipe import Recipe
from lungseg.core.safety import claim_dir, refuse_existing
from lungseg.data.volume import Geometry, read_image, read_label, write_mask
from lungseg.inference.crossval import Job, fold_jobs, single_job
from lungseg.inference.figures import (
    case_view,
    plot_loss_curve,
    save_case_figure,
    save_dice_bars,
    save_gallery,
)
from lungseg.inference.metrics import dice_from_counts, overlap
from lungseg.inference.postselect import PostSelection
from lungseg.inference.scoring import (
    DEFINITIONS,
    PRIMARY,
    case_row,
    check_primary,
    summary,
    to_json,
    write_results,
)
from lungseg.store.slices import SliceStore
from lungseg.training.dataset import open_store
from lungseg.training.folds import fold_dir, fold_parts
from lungseg.training.run_files import BEST


def output_folder(recipe: Recipe, split: str) -> Path:
    """Where ``evaluate`` writes a split's results: the run folder for ``val``, else its own."""
    out = Path(recipe.output)
    return out if split == "val" else out / f"evaluate_{split}"


@dataclass
class _Totals:
    """What the cases add up to: their rows, slice Dice scores, pooled counts, figures."""

    per_case: list[dict[str, Any]] = field(default_factory=list)
    slice_scores: list[float] = field(default_factory=list)
    pooled: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    views: list[Any] = field(default_factory=list)


def _score(
    job: Job,
    case_id: str,
    store: SliceStore,
    out: Path,
    metric_fns: dict[str, Any],
    totals: _Totals,
    *,
    figures: bool,
    save: bool,
    select: PostSelection | None,
) -> None:
    """Predict one stored case with the job's predictor, score it, write its mask and figure."""
    predictor = job.predictor
    slices, slice_masks = store.read_case(case_id)
    attrs = store.attrs(case_id)
    geometry = Geometry.from_attrs(attrs["geometry"])
    wanted = predictor.posts or figures or select is not None
    image = read_image(attrs["image_path"])[0] if wanted else None
    result = predictor.stored(slices, attrs["trace"], image, geometry.spacing)
    for k in np.flatnonzero(slice_masks.reshape(len(slice_masks), -1).any(axis=1)):
        hit = result.slice_probs[k] >= predictor.threshold
        totals.slice_scores.append(dice_from_counts(*overlap(hit, slice_masks[k] > 0)))
    pred = result.mask > 0
    truth = read_label(attrs["label_path"], geometry) > 0
    if select is not None:  # the mask before any post-processing
        raw = result.probs >= predictor.threshold
        select.add(raw, truth, image, geometry.spacing, attrs["image_path"])
    row = case_row(case_id, pred, truth, geometry.spacing, metric_fns)
    if job.fold is not None:
        row = {"case": case_id, "fold": job.fold, **row}
    totals.pooled += overlap(pred, truth)
    totals.per_case.append(row)
    if save:
        write_mask(out / "eval_predictions" / f"{case_id}.nii.gz", pred, attrs["image_path"])
    if figures:
        view = case_view(case_id, image, pred, geometry.affine, truth, to_json(row["dice"]))
        save_case_figure(view, out / "figures" / "cases" / f"{case_id}.png")
        totals.views.append(view)


def _fold_runs(recipe: Recipe) -> list[Path]:
    return [fold_dir(recipe.output, k) for k in range(recipe.split.folds)]


def _fold_head(recipe: Recipe, split: str) -> dict[str, Any]:
    """What ``metrics.json`` says of a k-fold evaluation besides the usual head."""
    head: dict[str, Any] = {
        "folds": recipe.split.folds,
        "out_of_fold": split == "val",
        "checkpoints": [str(run / "checkpoints" / BEST) for run in _fold_runs(recipe)],
    }
    key = "out_of_fold" if split == "val" else "fold_ensemble"
    head[f"{key}_definition"] = DEFINITIONS[key]
    return head


def evaluate(
    recipe: Recipe | Parts,
    checkpoint: str | os.PathLike | None = None,
    split: str = "val",
    *,
    figures: bool = True,
    overwrite: bool = False,
    fold: int | None = None,
    select_postprocess: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of the store; write ``metrics.json`` and figures.

    Each case's stored slices go through the checkpoint's
    :class:`~lungseg.inference.predictor.Predictor` (the same path ``lungseg predict`` takes:
    network, inverse chain, threshold at ``evaluate.threshold``, ``evaluate.postprocess``);
    evaluation adds only the scoring, by every metric plugin of the recipe's ``metrics``
    against the original label file.

    With ``split.folds`` > 1 (and no ``fold``), ``val`` is out-of-fold: each case is scored
    by the fold that validated on it, every non-test case exactly once, and ``per_case`` gets
    a ``fold`` column; ``test`` is scored by the ensemble of every fold
    (:mod:`lungseg.inference.crossval`). On ``val`` every registered postprocessor is also
    tried on the masks and the helpful ones recorded as ``postprocess_selection``
    (:mod:`lungseg.inference.postselect`).

    Args:
        recipe: the evaluation recipe (store, output, split, ``evaluate``, ``metrics``), or
            its assembled parts.
        checkpoint: defaults to the best checkpoint of ``recipe.output`` (of the fold's
            folder with ``fold``); not with ``split.folds`` > 1 unless ``fold`` is given.
        split: ``val``, ``test`` or ``train``. Validation results go to the run folder
            (``recipe.output``); any other split to its own ``<output>/evaluate_<split>/``,
            so the validation results stay in place.
        figures: write the per-case figures, gallery and Dice bar chart.
        overwrite: replace the results of an earlier evaluation of the same split.
        fold: with ``split.folds`` > 1, evaluate this fold alone, as an ordinary run, in
            its ``<output>/fold_<fold>/`` folder.
        select_postprocess: on ``val``, measure every registered postprocessor.

    Returns:
        The content of ``metrics.json``.

    Raises:
        DataError: the store was made with a different chain than the checkpoint's, the
            split is empty, or the folds do not validate every case exactly once.
        CheckpointError: no or unsafe checkpoint, a fold not trained, or one trained with
            another chain or model than ``recipe``.
        RecipeError: ``metrics`` lacks ``dice``; ``fold`` out of range; ``checkpoint`` or
            ``split`` ``train`` with ``split.folds`` > 1 and no ``fold``.
        OutputError: the results exist and ``overwrite`` is false, or the output folder
            holds files lungseg did not make.
    """
    parts = assemble(recipe)
    if fold is not None:
        parts = fold_parts(parts, fold)
    recipe = parts.recipe
    metric_fns = parts.metrics()
    check_primary(metric_fns, recipe.source_file)
    out = output_folder(recipe, split)
    refuse_existing([out / "metrics.json", out / "per_case.csv"], overwrite, "evaluation result")
    store = open_store(recipe)
    folded = recipe.split.folds > 1 and fold is None
    if folded:
        jobs = fold_jobs(parts, store, checkpoint, split)
    else:
        jobs = [single_job(parts, store, checkpoint, split)]
    claim_dir(recipe.output, "run", role="output")
    if out != Path(recipe.output):
        claim_dir(out, "evaluation", role=f"{split} evaluation folder")
    cfg = recipe.evaluate
    select = None
    if split == "val" and select_postprocess:
        select = PostSelection.from_registry(parts, metric_fns[PRIMARY])
    totals = _Totals()
    options = {"figures": figures, "save": cfg.save_predictions, "select": select}
    todo = [(job, case_id) for job in jobs for case_id in job.cases]
    for job, case_id in console.progress(todo, desc="evaluate", unit="case"):
        _score(job, case_id, store, out, metric_fns, totals, **options)
    per_case, views = totals.per_case, totals.views
    if folded:
        per_case.sort(key=lambda row: row["case"])
    head = {
        "split": split,
        "checkpoint": str(jobs[0].checkpoint if not folded else recipe.output),
        "threshold": cfg.threshold,
        "evaluate": {
            "threshold": cfg.threshold,
            "tta": cfg.tta,
            "postprocess": [c.to_dict() for c in cfg.postprocess],
        },
    }
    if folded:
        head.update(_fold_head(recipe, split))
    metrics = summary(head, per_case, totals.slice_scores, totals.pooled, list(metric_fns))
    if select is not None:
        metrics["postprocess_selection"] = select.result()
    metrics["recipe"] = (recipe if folded else jobs[0].trained).to_dict()
    write_results(out, metrics)
    if figures:
        save_gallery(views, out / "figures" / "gallery.png")
        save_dice_bars(metrics["per_case"], out / "figures" / "dice_per_case.png")
    curves = _fold_runs(recipe) if folded else [out]  # a fold's curve goes into its folder
    for run in curves if split == "val" or not folded else []:
        log = run / "logs" / "metrics.csv"
        if log.is_file():
            plot_loss_curve(log, run / "loss_curve.png", loss_name=recipe.loss.name)
    return metrics
