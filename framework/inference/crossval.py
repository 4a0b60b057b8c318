"""What ``evaluate`` runs: which predictor scores which cases, for one run or for k folds.

One :class:`Job` is a predictor and the cases it scores. A single run (``split.folds: 1``, or
one fold named by ``--fold``) is one job: its best checkpoint on the split's cases. A k-fold
run's validation is out-of-fold: one job per fold, fold ``k``'s best checkpoint on the cases
fold ``k`` validated on (from its ``split.json``), checked to score every case that is not a
test case exactly once. A k-fold run's test cases are scored by the ensemble of every fold
(:mod:`lungseg.inference.ensemble`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungseg.core.build import Parts
from lungseg.core.errors import CheckpointError, DataError, RecipeError
from lungseg.core.recipe import Recipe
from lungseg.inference.ensemble import load_predictor
from lungseg.inference.predictor import Predictor
from lungseg.store.slices import SliceStore
from lungseg.training.checkpoint import check_matches, find_best, read_checkpoint, stored_recipe
from lungseg.training.folds import case_split, fold_dir, fold_parts
from lungseg.training.run_files import BEST

__all__ = ["Job", "fold_jobs", "single_job", "splits"]


@dataclass
class Job:
    """A predictor and the cases it scores.

    Attributes:
        predictor: the checkpoint's (or the fold ensemble's) predictor.
        checkpoint: the checkpoint file, or the k-fold run folder for the ensemble.
        trained: the (first) checkpoint's recipe.
        cases: the case ids to score.
        fold: the fold whose model this is (``None`` outside out-of-fold validation).
    """

    predictor: Predictor
    checkpoint: Path
    trained: Recipe
    cases: list[str]
    fold: int | None = None


def splits(recipe: Recipe, cases: list[str]) -> dict[str, list[str]]:
    """The run's split: its ``split.json`` if training wrote one, else the recipe's split."""
    path = Path(recipe.output) / "split.json"
    if path.is_file():
        return json.loads(path.read_text())
    return case_split(cases, recipe.split)


def _settings(recipe: Recipe) -> dict[str, Any]:
    cfg = recipe.evaluate
    return {
        "threshold": cfg.threshold,
        "batch_size": cfg.batch_size,
        "tta": cfg.tta,
        "postprocessors": cfg.postprocess,
    }


def _check_store(store: SliceStore, ckpt: Path, trained: Recipe) -> None:
    if store.root_attrs().get("preprocess_hash") != trained.preprocess_hash():
        raise DataError(
            f"{store.path}: preprocessed differently from {ckpt}'s recipe; "
            "point `store.path` at the store it was trained on"
        )


def _need(cases: list[str], split: str) -> list[str]:
    if not cases:
        raise DataError(f"split {split!r} has no cases; check `split` in the recipe")
    return cases


def single_job(
    parts: Parts, store: SliceStore, checkpoint: str | os.PathLike | None, split: str
) -> Job:
    """One checkpoint (default: the run's best) on the run's ``split`` cases.

    Raises:
        CheckpointError: no or unsafe checkpoint, or one trained with another chain or model.
        DataError: the store was made with another chain, or the split is empty.
    """
    recipe = parts.recipe
    ckpt = Path(checkpoint) if checkpoint else find_best(recipe.output)
    predictor, trained = Predictor.from_checkpoint(ckpt, **_settings(recipe))
    check_matches(ckpt, trained, recipe)  # never silently another run's network or chain
    _check_store(store, ckpt, trained)
    cases = _need(splits(recipe, store.cases()).get(split) or [], split)
    return Job(predictor, ckpt, trained, cases)


def _fold_best(parts: Parts) -> dict[int, Path]:
    """Every fold's ``best.ckpt``, each checked against the recipe (chain and model).

    Raises:
        CheckpointError: a fold without ``best.ckpt``, or trained with another chain or model.
    """
    recipe = parts.recipe
    found = {
        k: fold_dir(recipe.output, k) / "checkpoints" / BEST for k in range(recipe.split.folds)
    }
    missing = [str(k) for k, path in found.items() if not path.is_file()]
    if missing:
        raise CheckpointError(
            f"{recipe.output}: fold(s) {', '.join(missing)} of {recipe.split.folds} have no "
            f"checkpoints/{BEST}; train them with `lungseg train RECIPE --fold all` "
            "(add --resume to keep the folds already trained)"
        )
    for path in found.values():
        check_matches(path, stored_recipe(read_checkpoint(path, mmap=True), path), recipe)
    return found


def fold_jobs(
    parts: Parts, store: SliceStore, checkpoint: str | os.PathLike | None, split: str
) -> list[Job]:
    """The jobs of a k-fold run: out-of-fold for ``val``, the fold ensemble for ``test``.

    Raises:
        RecipeError: ``checkpoint`` given (name the fold instead), or ``split`` is ``train``.
        CheckpointError: a fold not trained, or trained with another chain or model.
        DataError: the folds' validation cases overlap or miss a case, another store, or an
            empty split.
    """
    recipe = parts.recipe
    folds = recipe.split.folds
    if checkpoint is not None:
        raise RecipeError(
            f"--checkpoint: {recipe.source_file} has split.folds {folds}, so evaluate scores "
            "each case with the fold that validated on it; drop --checkpoint, or pass "
            "--fold N to score fold N's checkpoint on its own validation cases"
        )
    if split not in ("val", "test"):
        raise RecipeError(
            f"--split {split}: with split.folds {folds} every case but the test cases trains "
            "some fold; evaluate val (out-of-fold) or test (the folds' ensemble)"
        )
    best = _fold_best(parts)
    cases = store.cases()
    if split == "test":
        predictor, trained = load_predictor(list(best.values()), **_settings(recipe))
        _check_store(store, best[0], trained)
        test = _need(splits(fold_parts(parts, 0).recipe, cases).get("test") or [], split)
        return [Job(predictor, Path(recipe.output), trained, test)]
    jobs, seen, tests = [], {}, set()
    for k, ckpt in best.items():
        one = fold_parts(parts, k).recipe
        split_k = splits(one, cases)
        tests.update(split_k.get("test") or [])
        for case in split_k.get("val") or []:
            if case in seen:
                raise DataError(
                    f"{recipe.output}: case {case} is in the validation cases of folds "
                    f"{seen[case]} and {k}; the folds were trained with different splits: "
                    "train them again with `lungseg train RECIPE --fold all --overwrite`"
                )
            seen[case] = k
        predictor, trained = Predictor.from_checkpoint(ckpt, **_settings(recipe))
        _check_store(store, ckpt, trained)
        jobs.append(Job(predictor, ckpt, trained, list(split_k.get("val") or []), k))
    unseen = sorted(set(cases) - set(seen) - tests)
    if unseen:
        raise DataError(
            f"{recipe.output}: case(s) {', '.join(unseen[:3])} of {store.path} were validated "
            "by no fold (the store gained cases after training); train the folds again with "
            "`lungseg train RECIPE --fold all --overwrite`"
        )
    return jobs
