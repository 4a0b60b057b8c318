"""``lungseg run``: every stage of a recipe in order, printing where each output went.

Under several processes (``torchrun``, ``srun``, or Lightning's DDP launcher re-running the
command line) only global rank 0 fetches and preprocesses the data before training (the
others wait inside the Trainer, whose ``prepare_data`` barrier follows rank 0), and only
global rank 0 evaluates and predicts; the other ranks return 0 after training.

With ``split.folds`` > 1 it trains every fold (``<output>/fold_<k>/``), evaluates out-of-fold
(every case scored by the fold that did not train on it) and predicts the unlabelled scans
with the ensemble of the folds.

With ``resume`` (``lungseg run --resume``, for jobs that a scheduler may stop and start
again) finished stages are kept as they are (:mod:`lungseg.run_state`): the data and store
are reused, a finished training (each fold's) is skipped and an interrupted one continues
from its ``last.ckpt``, an evaluation of the same best checkpoint is kept, and only the
masks not written yet are predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

from lungseg.core import console
from lungseg.core.build import Parts, assemble
from lungseg.core.errors import OutputError
from lungseg.core.recipe import Recipe
from lungseg.core.recipe_trackers import check_trackers
from lungseg.data.msd import find_cases
from lungseg.data.sources import prepare_source
from lungseg.inference.evaluate import evaluate
from lungseg.inference.predict import predict
from lungseg.preprocess.run import run_preprocess
from lungseg.run_state import evaluation_done, missing_predictions, training_state
from lungseg.training.folds import fold_parts
from lungseg.training.run_files import BEST, LAST
from lungseg.training.train import TrainResult, launch_rank, train


def run(recipe: Recipe | Parts, *, overwrite: bool = False, resume: bool = False) -> int:
    """Prepare data, preprocess, train, evaluate, and predict the unlabelled test scans.

    Args:
        recipe: the run's recipe, or its assembled parts (built once, used by every stage).
        overwrite: replace an earlier run's checkpoints, evaluation and predictions in the
            recipe's output (the store is reused when its chain matches).
        resume: keep what an earlier run of this recipe finished and do the rest: resume an
            interrupted training from ``last.ckpt``; nothing finished is written again.

    Returns:
        The exit status (0).

    Raises:
        OutputError: ``resume`` and ``overwrite`` together; with ``resume``, an evaluation
            or a mask made from older checkpoints than the run's (never replaced).
    """
    if resume and overwrite:
        raise OutputError(
            "--resume keeps the finished stages and --overwrite replaces them: pass only one"
        )
    parts = assemble(recipe)
    recipe = parts.recipe
    check_trackers(recipe)  # a missing tracker package, before any data is fetched
    folds = recipe.split.folds
    if launch_rank() != 0:
        # A DDP worker: rank 0 prepares the data, evaluates and predicts.
        _train(parts, overwrite, resume)
        return 0
    root = prepare_source(recipe.data)
    console.result(f"[1/5] data: {root}")
    report = run_preprocess(parts)
    counts = f"{len(report.written)} written, {len(report.skipped)} reused"
    console.result(f"[2/5] store: {recipe.store.path} ({counts})")
    results = _train(parts, overwrite, resume)
    if not results[0].is_global_zero:
        return 0  # DDP workers stop after training; rank 0 evaluates
    out = Path(recipe.output)
    for result in results:
        console.result(f"[3/5] checkpoints: {result.best} (best), {result.last} (last)")
    bests = [r.best for r in results]
    curves = f"{out}/loss_curve.png" if folds == 1 else f"{out}/fold_*/loss_curve.png"
    if resume and evaluation_done(recipe, bests):
        console.log.info("evaluation: kept (it scores the same best checkpoint)")
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    else:
        console.log.info(f"evaluating {'out-of-fold' if folds > 1 else bests[0]}")
        # an interrupted evaluation (no per_case.csv yet) of this run is redone in full
        again = overwrite or (resume and (out / "metrics.json").is_file())
        metrics = evaluate(parts, bests[0] if folds == 1 else None, overwrite=again)
    dice = metrics["mean_case_dice"]
    shown = "n/a" if dice is None else f"{dice:.4f}"
    if folds > 1:
        shown += f", out-of-fold over {folds} folds"
    console.result(f"[4/5] evaluation: {out / 'metrics.json'} (mean_case_dice {shown}), {curves}")
    tests = find_cases(root, labelled=False) if (root / "imagesTs").is_dir() else []
    if tests:
        scans = [c.image for c in tests]
        folder = out / "predictions"
        todo = missing_predictions(scans, folder, bests) if resume else scans
        written = 0
        if todo:
            console.log.info(f"predicting {len(todo)} unlabelled scans")
            written = len(predict(bests, todo, folder, overwrite=overwrite).written)
        ensemble = "" if folds == 1 else f", ensemble of {folds} folds"
        kept = f", {len(scans) - len(todo)} kept" if resume else ""
        console.result(f"[5/5] predictions: {folder} ({written} masks{kept}{ensemble})")
    else:
        console.result("[5/5] predictions: no unlabelled scans (imagesTs) to predict")
    return 0


def _train(parts: Parts, overwrite: bool, resume: bool) -> list[TrainResult]:
    """Train the run, or every fold of a k-fold run; one result per model.

    With ``resume`` a finished training is kept and an interrupted one resumed.
    """
    folds = parts.recipe.split.folds
    chosen = list(range(folds)) if folds > 1 else [None]
    for k in chosen:
        if k is not None:
            fold_parts(parts, k)  # every fold checked before the first one trains
    results = []
    for k in chosen:
        one = parts if k is None else fold_parts(parts, k)
        state = training_state(one.recipe) if resume else "none"
        where = "" if k is None else f" (fold {k})"
        if state == "finished":
            console.log.info(f"training{where}: finished earlier, kept")
            folder = Path(one.recipe.output).resolve() / "checkpoints"  # as train() gives
            rank0 = launch_rank() == 0
            results.append(
                TrainResult(str(folder / BEST), str(folder / LAST), folder.parent, rank0)
            )
            continue
        if state == "interrupted":
            console.log.info(f"training{where}: resuming from {LAST}")
        results.append(train(parts, resume=state == "interrupted", overwrite=overwrite, fold=k))
    return results
