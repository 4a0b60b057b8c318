"""``lungseg run``: every stage of a recipe in order, printing where each output went.

Under several processes (``torchrun``, ``srun``, or Lightning's DDP launcher re-running the
command line) only global rank 0 fetches and preprocesses the data before training (the
others wait inside the Trainer, whose ``prepare_data`` barrier follows rank 0), and only
global rank 0 evaluates and predicts; the other ranks return 0 after training.
"""

from __future__ import annotations

from pathlib import Path

from lungseg.core.build import Parts, assemble
from lungseg.core.recipe import Recipe
from lungseg.data.msd import find_cases
from lungseg.data.sources import prepare_source
from lungseg.inference.evaluate import evaluate
from lungseg.inference.predict import predict
from lungseg.preprocess.run import run_preprocess
from lungseg.training.train import launch_rank, train


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
    if launch_rank() != 0:
        # A DDP worker: rank 0 prepares the data, evaluates and predicts.
        train(parts, overwrite=overwrite)
        return 0
    root = prepare_source(recipe.data)
    print(f"[1/5] data: {root}")
    report = run_preprocess(parts)
    counts = f"{len(report.written)} written, {len(report.skipped)} reused"
    print(f"[2/5] store: {recipe.store.path} ({counts})")
    result = train(parts, overwrite=overwrite)
    if not result.is_global_zero:
        return 0  # DDP workers stop after training; rank 0 evaluates
    print(f"[3/5] checkpoints: {result.best} (best), {result.last} (last)")
    metrics = evaluate(parts, result.best, overwrite=overwrite)
    out = Path(recipe.output)
    dice = metrics["mean_case_dice"]
    shown = "n/a" if dice is None else f"{dice:.4f}"
    print(
        f"[4/5] evaluation: {out / 'metrics.json'} (mean_case_dice {shown}), {out}/loss_curve.png"
    )
    tests = find_cases(root, labelled=False) if (root / "imagesTs").is_dir() else []
    if tests:
        pred = predict(
            result.best, [c.image for c in tests], out / "predictions", overwrite=overwrite
        )
        print(f"[5/5] predictions: {out / 'predictions'} ({len(pred.written)} masks)")
    else:
        print("[5/5] predictions: no unlabelled scans (imagesTs) to predict")
    return 0
