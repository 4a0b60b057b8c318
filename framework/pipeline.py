"""``lungseg run``: every stage of a recipe in order, printing where each output went.

Under several processes (``torchrun``, ``srun``, or Lightning's DDP launcher re-running the
command line) only global rank 0 fetches and preprocesses the data before training (the
others wait inside the Trainer, whose ``prepare_data`` barrier follows rank 0), and only
global rank 0 evaluates and predicts; the other ranks return 0 after training.

With ``split.folds`` > 1 it trains every fold (``<output>/fold_<k>/``), evaluates out-of-fold
(every case scored by the fold that did not train on it) and predicts the unlabelled scans
with the ensemble of the folds.
"""

from __future__ import annotations

from pathlib import Path

from lungseg.core import console
from lungseg.core.build import Parts, assemble
from lungseg.core.recipe import Recipe
from lungseg.data.msd import find_cases
from lungseg.data.sources import prepare_source
from lungseg.inference.evaluate import evaluate
from lungseg.inference.predict import predict
from lungseg.preprocess.run import run_preprocess
from lungseg.training.train import TrainResult, launch_rank, train, train_folds


def run(recipe: Recipe | Parts, *, overwrite: bool = False) -> int:
    """Prepare data, preprocess, train, evaluate, and predict the unlabelled test scans.

    Args:
        recipe: the run's recipe, or its assembled parts (built once, used by every stage).
        overwrite: replace an earlier run's checkpoints, evaluation and predictions in the
            recipe's output (the store is reused when its chain matches).

    Returns:
        The exit status (0).
    """
    parts = assemble(recipe)
    recipe = parts.recipe
    folds = recipe.split.folds
    if launch_rank() != 0:
        # A DDP worker: rank 0 prepares the data, evaluates and predicts.
        _train(parts, overwrite)
        return 0
    root = prepare_source(recipe.data)
    console.result(f"[1/5] data: {root}")
    report = run_preprocess(parts)
    counts = f"{len(report.written)} written, {len(report.skipped)} reused"
    console.result(f"[2/5] store: {recipe.store.path} ({counts})")
    results = _train(parts, overwrite)
    if not results[0].is_global_zero:
        return 0  # DDP workers stop after training; rank 0 evaluates
    out = Path(recipe.output)
    for result in results:
        console.result(f"[3/5] checkpoints: {result.best} (best), {result.last} (last)")
    metrics = evaluate(parts, results[0].best if folds == 1 else None, overwrite=overwrite)
    dice = metrics["mean_case_dice"]
    shown = "n/a" if dice is None else f"{dice:.4f}"
    if folds == 1:
        curves = f"{out}/loss_curve.png"
    else:
        shown += f", out-of-fold over {folds} folds"
        curves = f"{out}/fold_*/loss_curve.png"
    console.result(f"[4/5] evaluation: {out / 'metrics.json'} (mean_case_dice {shown}), {curves}")
    tests = find_cases(root, labelled=False) if (root / "imagesTs").is_dir() else []
    if tests:
        members = [results[0].best] if folds == 1 else [r.best for r in results]
        scans = [c.image for c in tests]
        pred = predict(members, scans, out / "predictions", overwrite=overwrite)
        ensemble = "" if folds == 1 else f", ensemble of {folds} folds"
        written = f"{len(pred.written)} masks{ensemble}"
        console.result(f"[5/5] predictions: {out / 'predictions'} ({written})")
    else:
        console.result("[5/5] predictions: no unlabelled scans (imagesTs) to predict")
    return 0


def _train(parts: Parts, overwrite: bool) -> list[TrainResult]:
    """Train the run, or every fold of a k-fold run; one result per model trained."""
    if parts.recipe.split.folds > 1:
        return train_folds(parts, overwrite=overwrite)
    return [train(parts, overwrite=overwrite)]
