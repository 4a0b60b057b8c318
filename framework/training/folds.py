"""k-fold cross-validation by case: the folds, and where each fold's run folder lies.

With ``split.folds: K`` > 1 the cases left after ``split.test_fraction`` are split into K folds
(scikit-learn ``KFold`` over the sorted case ids, shuffled with ``split.seed``); fold ``k``
validates on its cases and trains on the other folds' cases, so every case is validated by
exactly one fold. The held-out test cases are drawn as :func:`split_cases` draws them with
``val_fraction`` 0, and never enter any fold. With ``split.folds: 1`` (the default) the split is
:func:`~lungseg.training.dataset.split_cases`, unchanged.

A k-fold run folder (the recipe's ``output``) holds ``recipe.yaml`` and one ordinary run folder
per fold, ``fold_<k>/`` (checkpoints, logs, ``split.json``...).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
from pytorch_lightning import Callback, LightningModule, Trainer

from lungseg.core.build import Parts
from lungseg.core.errors import DataError, RecipeError
from lungseg.core.recipe import Recipe, SplitConfig

__all__ = [
    "FOLD_PREFIX",
    "FoldSplitCheck",
    "case_split",
    "fold_dir",
    "fold_folders",
    "fold_parts",
    "fold_splits",
]

FOLD_PREFIX = "fold_"
"""A fold's run folder is ``<output>/fold_<k>``."""

_FOLD_NAME = re.compile(rf"{FOLD_PREFIX}(\d+)")


def fold_splits(
    case_ids: list[str], folds: int, test_fraction: float, seed: int
) -> list[dict[str, list[str]]]:
    """Every fold's split of ``case_ids``, by case, reproducibly for ``seed``.

    Args:
        case_ids: the cases (order does not matter).
        folds: K, at least 2.
        test_fraction: fraction of the cases held out for testing, before the folds.
        seed: seeds the test draw and the ``KFold`` shuffle.

    Returns:
        K dicts ``{"train": [...], "val": [...], "test": [...]}`` (each list sorted); the
        ``val`` lists partition the cases that are not ``test``.

    Raises:
        DataError: fewer cases left after the test draw than folds.
    """
    from sklearn.model_selection import KFold

    ids = sorted(case_ids)
    n_test = math.ceil(len(ids) * test_fraction) if test_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    test = sorted(ids[i] for i in order[:n_test])
    rest = sorted(ids[i] for i in order[n_test:])
    if folds < 2 or len(rest) < folds:
        raise DataError(
            f"{len(ids)} preprocessed cases ({len(test)} held out by split.test_fraction="
            f"{test_fraction}) cannot be split into split.folds={folds} folds of at least one "
            "case each; add cases or lower split.folds"
        )
    kfold = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        {
            "train": sorted(rest[i] for i in train),
            "val": sorted(rest[i] for i in val),
            "test": list(test),
        }
        for train, val in kfold.split(rest)
    ]


def case_split(case_ids: list[str], split: SplitConfig) -> dict[str, list[str]]:
    """The split a recipe's ``split`` section asks for: fold ``split.fold`` of ``split.folds``.

    With ``split.folds`` 1 this is :func:`~lungseg.training.dataset.split_cases` with the
    recipe's fractions and seed, exactly as without folds.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.

    Raises:
        DataError: too few cases for the requested split.
    """
    if split.folds == 1:
        from lungseg.training.dataset import split_cases  # imports this module

        return split_cases(case_ids, split.val_fraction, split.test_fraction, split.seed)
    return fold_splits(case_ids, split.folds, split.test_fraction, split.seed)[split.fold]


def fold_dir(output: str | Path, fold: int) -> Path:
    """The run folder of fold ``fold`` inside a k-fold run folder: ``<output>/fold_<fold>``."""
    return Path(output) / f"{FOLD_PREFIX}{fold}"


def fold_folders(output: str | Path) -> dict[int, Path]:
    """The ``fold_<k>`` folders present in ``output``, by fold number (empty if none)."""
    folder = Path(output)
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _FOLD_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def fold_parts(parts: Parts, fold: int | None = None) -> Parts:
    """The parts of one fold: ``split.fold`` set, ``output`` its ``fold_<k>`` folder.

    Args:
        parts: the k-fold recipe's parts (``split.folds`` > 1; ``output`` the k-fold folder).
        fold: the fold (default: the recipe's ``split.fold``).

    Raises:
        RecipeError: ``split.folds`` is 1, or ``fold`` is not in ``[0, split.folds)``.
    """
    recipe = parts.recipe
    folds = recipe.split.folds
    fold = recipe.split.fold if fold is None else fold
    if folds == 1:
        raise RecipeError(
            f"--fold {fold}: {recipe.source_file} has split.folds 1 (one train/validation "
            "split); set split.folds to 2 or more for k-fold cross-validation"
        )
    if not 0 <= fold < folds:
        raise RecipeError(
            f"--fold {fold}: {recipe.source_file} has split.folds {folds}; "
            f"pick a fold in 0..{folds - 1}, or all"
        )
    changed = dataclasses.replace(
        recipe,
        output=str(fold_dir(recipe.output, fold)),
        split=dataclasses.replace(recipe.split, fold=fold),
    )
    return Parts(changed, parts.plugins)


class FoldSplitCheck(Callback):
    """Refuse to train a fold on any other split than the fold's own (checked at ``setup``).

    The data module's split (``trainer.datamodule.splits``) must be :func:`case_split` of
    its cases for the recipe's ``split`` section.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        splits = trainer.datamodule.splits
        cases = sorted({case for ids in splits.values() for case in ids})
        if splits != case_split(cases, self.recipe.split):
            raise DataError(
                f"{self.recipe.output}: the data module did not split the cases into fold "
                f"{self.recipe.split.fold} of {self.recipe.split.folds} "
                "(SliceDataModule.setup must take its split from lungseg.training.folds."
                "case_split); nothing was trained"
            )
