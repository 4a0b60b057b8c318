"""k-fold splitting by case: a partition of the non-test cases, reproducible, held-out test kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungseg.core.build import assemble
from lungseg.core.errors import DataError, RecipeError
from lungseg.core.recipe import SplitConfig, recipe_from_dict
from lungseg.training.dataset import split_cases
from lungseg.training.folds import case_split, fold_folders, fold_parts, fold_splits

from ..conftest import tiny_recipe_dict

CASES = [f"lung_{i:03d}" for i in range(1, 24)]


@pytest.mark.parametrize(("n", "folds", "test_fraction"), [(5, 2, 0.0), (23, 5, 0.2), (7, 7, 0.0)])
def test_folds_partition_the_cases_and_validate_each_once(n, folds, test_fraction):
    cases = CASES[:n]
    splits = fold_splits(cases[::-1], folds, test_fraction, seed=3)  # order does not matter
    assert len(splits) == folds
    test = set(splits[0]["test"])
    assert len(test) == (0 if test_fraction == 0 else -(-n * test_fraction // 1))
    rest = set(cases) - test
    validated: list[str] = []
    for split in splits:
        assert set(split["test"]) == test  # the held-out cases enter no fold
        train, val = set(split["train"]), set(split["val"])
        assert val and train and not val & train and not (val | train) & test
        assert val | train == rest
        assert split["train"] == sorted(split["train"]) and split["val"] == sorted(split["val"])
        validated += split["val"]
    assert sorted(validated) == sorted(rest)  # every case validated exactly once
    sizes = [len(s["val"]) for s in splits]
    assert max(sizes) - min(sizes) <= 1


def test_folds_are_reproducible_for_a_seed_and_change_with_it():
    a = fold_splits(CASES, 5, 0.1, seed=0)
    assert a == fold_splits(list(reversed(CASES)), 5, 0.1, seed=0)
    assert a != fold_splits(CASES, 5, 0.1, seed=1)
    # the held-out test cases do not depend on the number of folds
    assert a[0]["test"] == fold_splits(CASES, 3, 0.1, seed=0)[0]["test"]


def test_case_split_picks_the_fold_and_keeps_one_split_as_before():
    one = SplitConfig(val_fraction=0.3, test_fraction=0.1, seed=4)
    assert case_split(CASES, one) == split_cases(CASES, 0.3, 0.1, 4)
    three = SplitConfig(test_fraction=0.1, seed=4, folds=3, fold=2)
    assert case_split(CASES, three) == fold_splits(CASES, 3, 0.1, 4)[2]


def test_too_few_cases_for_the_folds_is_a_clear_error():
    with pytest.raises(DataError, match=r"split\.folds=4"):
        fold_splits(CASES[:5], 4, 0.4, seed=0)


def test_fold_parts_and_folders(tiny_dataset, tmp_path):
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["split"] = {"folds": 3, "seed": 0}
    parts = assemble(recipe_from_dict(raw, source="tiny.yaml"))
    one = fold_parts(parts, 2).recipe
    assert Path(one.output) == tmp_path / "run" / "fold_2" and one.split.fold == 2
    assert fold_parts(parts).recipe.split.fold == 0
    with pytest.raises(RecipeError, match=r"--fold 3: tiny\.yaml has split\.folds 3; pick"):
        fold_parts(parts, 3)
    raw["split"] = {"folds": 1}
    with pytest.raises(RecipeError, match="split.folds 1"):
        fold_parts(assemble(recipe_from_dict(raw, source="tiny.yaml")), 0)
    for name in ("fold_1", "fold_0", "fold_x", "notes"):
        (tmp_path / "run" / name).mkdir(parents=True)
    (tmp_path / "run" / "fold_7").write_text("a file, not a fold")
    run = tmp_path / "run"
    assert fold_folders(run) == {0: run / "fold_0", 1: run / "fold_1"}
