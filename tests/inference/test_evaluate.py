"""``lungseg evaluate`` cross-checked against its own written predictions and the label files."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
import yaml

from lungseg.core.build import assemble
from lungseg.core.errors import DataError
from lungseg.inference.evaluate import evaluate
from lungseg.inference.figures import PRED_COLOUR, TRUE_COLOUR, case_view, save_dice_bars
from lungseg.inference.predict import predict
from lungseg.inference.predictor import predict_probs
from lungseg.training.checkpoint import load_checkpoint
from lungseg.training.dataset import open_store

from .test_figures import check_contour, panels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(tiny_trained, tmp_path_factory):
    """Evaluate at the median probability, so the tiny model predicts something to compare."""
    recipe, best = tiny_trained
    module, _ = load_checkpoint(best)
    case = open_store(recipe).cases()[0]
    probs = predict_probs(module.model, open_store(recipe).read_case(case)[0])
    threshold = float(np.median(probs))
    recipe = dataclasses.replace(
        recipe,
        output=str(tmp_path_factory.mktemp("eval") / "run"),
        evaluate=dataclasses.replace(recipe.evaluate, threshold=threshold),
    )
    return recipe, best, evaluate(recipe, best)


def test_metrics_json_agrees_with_dice_recomputed_from_the_written_files(evaluated, tiny_dataset):
    recipe, best, _ = evaluated
    metrics = json.loads((Path(recipe.output) / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(best) and metrics["split"] == "val"
    inter_all = pred_all = truth_all = 0
    dices = []
    for row in metrics["per_case"]:
        written = nib.load(f"{recipe.output}/eval_predictions/{row['case']}.nii.gz")
        label = nib.load(str(tiny_dataset / "labelsTr" / f"{row['case']}.nii.gz"))
        assert written.shape == label.shape and written.get_data_dtype() == np.uint8
        np.testing.assert_allclose(written.affine, label.affine)
        p = np.asarray(written.dataobj) == 1
        t = np.asarray(label.dataobj) == 1
        inter, n_p, n_t = int((p & t).sum()), int(p.sum()), int(t.sum())
        assert (row["predicted_voxels"], row["tumour_voxels"]) == (n_p, n_t)
        assert row["dice"] == pytest.approx(2 * inter / (n_p + n_t), abs=1e-12)
        voxel_ml = float(np.prod(label.header.get_zooms()[:3])) / 1000
        assert row["predicted_ml"] == pytest.approx(n_p * voxel_ml)
        dices.append(row["dice"])
        inter_all, pred_all, truth_all = inter_all + inter, pred_all + n_p, truth_all + n_t
    assert any(d > 0 for d in dices), "the cross-check needs a non-trivial overlap"
    assert metrics["mean_case_dice"] == pytest.approx(np.mean(dices), abs=1e-12)
    assert metrics["pooled_dice"] == pytest.approx(2 * inter_all / (pred_all + truth_all))


def test_metrics_json_labels_every_aggregate_and_reports_every_metric(
    evaluated, tiny_dataset, tmp_path
):
    recipe, _, result = evaluated
    for key in ("mean_case_dice", "slice_dice", "pooled_dice", "means", "no_tumour_cases"):
        assert key in result and result[f"{key}_definition"]
    names = [c.name for c in recipe.metrics]
    assert names == list(result["means"]) == list(result["no_tumour_cases"]["means"])
    assert result["threshold"] == recipe.evaluate.threshold
    assert result["recipe"]["preprocess"] == assemble(recipe).recipe.preprocess_dict()
    for row in result["per_case"]:
        assert set(names) <= set(row)
        assert row["hd95"] is None or row["hd95"] >= 0
    for name, mean in result["means"].items():
        values = [r[name] for r in result["per_case"] if r["tumour_voxels"] > 0]
        finite = [v for v in values if v is not None and not math.isnan(v)]
        assert mean == (pytest.approx(np.mean(finite)) if finite else None)
    with open(f"{recipe.output}/per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == [r["case"] for r in result["per_case"]]
    assert float(rows[0]["dice"]) == pytest.approx(result["per_case"][0]["dice"])
    # the figures, read back: each case's slice with both contours where the masks are
    figures = Path(recipe.output) / "figures"
    views = []
    for row in result["per_case"]:
        scan = nib.load(str(tiny_dataset / "imagesTr" / f"{row['case']}.nii.gz"))
        label = nib.load(str(tiny_dataset / "labelsTr" / f"{row['case']}.nii.gz"))
        written = nib.load(f"{recipe.output}/eval_predictions/{row['case']}.nii.gz")
        view = case_view(
            row["case"],
            np.asarray(scan.dataobj),
            np.asarray(written.dataobj),
            scan.affine,
            np.asarray(label.dataobj),
            row["dice"],
        )
        png = mpimg.imread(figures / "cases" / f"{row['case']}.png")
        (box,) = panels(png)
        check_contour(png[box], PRED_COLOUR, view.pred)
        check_contour(png[box], TRUE_COLOUR, view.truth)
        views.append(view)
    # the gallery: the best cases by Dice, then the worst, each with its own contours
    order = sorted((v for v in views if v.dice is not None), key=lambda v: -v.dice)
    shown = order[:3] + order[::-1][: min(3, max(len(order) - 3, 0))]
    png = mpimg.imread(figures / "gallery.png")
    boxes = panels(png)
    assert len(boxes) == len(shown) > 0
    for box, view in zip(boxes, shown, strict=True):
        check_contour(png[box], PRED_COLOUR, view.pred)
        check_contour(png[box], TRUE_COLOUR, view.truth)
    # the Dice chart is the chart of these rows (its bars are checked in test_figures.py)
    chart = mpimg.imread(figures / "dice_per_case.png")
    same = save_dice_bars(result["per_case"], tmp_path / "same.png")
    np.testing.assert_array_equal(chart, mpimg.imread(same))
    flipped = [
        {**r, "dice": 1 - r["dice"]} if r["dice"] is not None else r for r in result["per_case"]
    ]
    other = save_dice_bars(flipped, tmp_path / "other.png")
    assert not np.array_equal(chart, mpimg.imread(other))


def test_evaluate_and_predict_give_the_same_mask(evaluated, tiny_dataset, tmp_path):
    recipe, best, result = evaluated
    case = result["per_case"][0]["case"]
    report = predict(
        best,
        [tiny_dataset / "imagesTr" / f"{case}.nii.gz"],
        tmp_path,
        threshold=recipe.evaluate.threshold,
    )
    assert not report.failed
    a = np.asarray(nib.load(str(report.written[0])).dataobj)
    b = np.asarray(nib.load(f"{recipe.output}/eval_predictions/{case}.nii.gz").dataobj)
    # the store keeps float16 slices: allow a few voxels at the threshold to differ
    assert np.count_nonzero(a != b) <= max(3, 0.002 * a.size)


def test_threshold_is_the_one_configured(evaluated, tmp_path):
    recipe, best, _ = evaluated
    high = dataclasses.replace(
        recipe,
        output=str(tmp_path / "run"),
        evaluate=dataclasses.replace(recipe.evaluate, threshold=0.999999, save_predictions=False),
    )
    result = evaluate(high, best, figures=False)
    assert all(r["predicted_voxels"] == 0 for r in result["per_case"])
    assert result["mean_case_dice"] == 0.0 and result["threshold"] == 0.999999
    assert not (tmp_path / "run" / "eval_predictions").exists()


def test_empty_split_is_a_clear_error(evaluated):
    recipe, best, _ = evaluated
    with pytest.raises(DataError, match="split 'test' has no cases"):
        evaluate(recipe, best, "test", figures=False)


def test_cli_evaluate_prints_metrics(tiny_trained, tmp_path):
    recipe, best = tiny_trained
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lungseg",
            "evaluate",
            recipe.source_file,
            "--checkpoint",
            str(best),
            "--set",
            f"output={tmp_path / 'cli'}",
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mean_case_dice (val)" in result.stdout and "pooled_dice (val)" in result.stdout
    assert (tmp_path / "cli" / "metrics.json").is_file()


def _dice(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    total = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / total) if total else float("nan")


def _drop(box: tuple[slice, ...]):
    def post(mask, image, spacing):
        out = mask.copy()
        out[box] = False
        return out

    return post


def test_post_selection_keeps_what_helps_by_the_margin_and_combines_greedily(tmp_path):
    from lungseg.inference.postselect import MARGIN, PostSelection

    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12), np.float32), np.eye(4)), str(image))
    truth = np.zeros((12, 12, 12), bool)
    truth[:4, :4, :4] = True  # 64 voxels
    pred = truth.copy()
    b, c = np.s_[8:12, 8:12, 8:12], np.s_[8:10, :2, :2]
    pred[b] = True  # 64 spurious voxels
    pred[c] = True  # 8 spurious voxels
    posts = {
        "drop-b": _drop(b),
        "drop-c": _drop(c),
        "erase": lambda m, i, s: np.zeros_like(m),
        "noop": lambda m, i, s: m,
    }
    select = PostSelection(posts, _dice, skipped={"needs-args": "no defaults"})
    select.add(pred, truth, np.zeros(truth.shape, np.float32), (1.0, 1.0, 1.0), str(image))
    empty = np.zeros_like(truth)
    select.add(pred, empty, np.zeros(truth.shape, np.float32), (1.0, 1.0, 1.0), str(image))
    result = select.result()
    assert result["cases"] == 1  # the case without tumour does not count
    assert result["baseline"] == pytest.approx(128 / 200)
    assert result["candidates"] == {
        "drop-b": pytest.approx(128 / 136),
        "drop-c": pytest.approx(128 / 192),
        "erase": 0.0,
        "noop": pytest.approx(128 / 200),  # no gain: not chosen
    }
    assert result["chosen"] == ["drop-b", "drop-c"]  # best first, then what still helps
    assert result["combinations"] == {"drop-b + drop-c": pytest.approx(1.0)}
    assert result["chosen_dice"] == pytest.approx(1.0) and result["margin"] == MARGIN
    assert result["skipped"] == {"needs-args": "no defaults"}


@pytest.fixture(scope="module")
def kfold_evaluated(tiny_dataset, tmp_path_factory):
    """Two folds trained one epoch each (one case held out for testing), evaluated out-of-fold."""
    from lungseg.core.recipe import load_recipe
    from lungseg.preprocess.run import run_preprocess
    from lungseg.training.train import train_folds

    from ..conftest import tiny_recipe_dict

    work = tmp_path_factory.mktemp("kfold")
    raw = tiny_recipe_dict(tiny_dataset, work)
    raw["split"] = {"folds": 2, "test_fraction": 0.2, "seed": 0}
    raw["trainer"]["max_epochs"] = 1
    raw["evaluate"] = {"threshold": 0.3}
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    run_preprocess(recipe, workers=1)
    train_folds(recipe)
    return recipe, evaluate(recipe, figures=False)


def test_out_of_fold_scores_every_case_once_by_the_fold_that_did_not_train_on_it(
    kfold_evaluated,
):
    from lungseg.core.build import registry

    recipe, result = kfold_evaluated
    out = Path(recipe.output)
    assert result["out_of_fold"] is True and result["folds"] == 2
    assert result["checkpoints"] == [str(out / f"fold_{k}/checkpoints/best.ckpt") for k in (0, 1)]
    fold_of = {}
    for k in (0, 1):
        split = json.loads((out / f"fold_{k}" / "split.json").read_text())
        fold_of.update({case: k for case in split["val"]})
        test = split["test"]
    cases = open_store(recipe).cases()
    assert len(test) == 1 and sorted(fold_of) == sorted(set(cases) - set(test))
    assert [r["case"] for r in result["per_case"]] == sorted(fold_of)  # each case once
    assert all(r["fold"] == fold_of[r["case"]] for r in result["per_case"])
    with open(out / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:2] == ["case", "fold"]
    assert [int(r["fold"]) for r in rows] == [r["fold"] for r in result["per_case"]]
    tumour = [r["dice"] for r in result["per_case"] if r["tumour_voxels"] > 0]
    assert result["mean_case_dice"] == pytest.approx(np.mean(tumour), abs=1e-12)
    assert result["out_of_fold_definition"] and result["mean_case_dice_definition"]
    # each fold evaluated alone, on its own validation cases, gives the very same rows
    for k in (0, 1):
        alone = evaluate(recipe, fold=k, figures=False, select_postprocess=False)
        assert (out / f"fold_{k}" / "metrics.json").is_file()
        mine = [{**r} for r in result["per_case"] if r["fold"] == k]
        for row in mine:
            del row["fold"]
        assert alone["per_case"] == mine
    # post-processing measured on the out-of-fold masks, each registered one with defaults
    selection = result["postprocess_selection"]
    assert sorted(selection["candidates"]) == registry().names("postprocessor")
    assert selection["baseline"] == pytest.approx(result["mean_case_dice"])
    assert selection["cases"] == len(tumour)
    for name in selection["chosen"]:
        assert selection["candidates"][name] >= selection["baseline"] + selection["margin"]


def test_kfold_test_split_is_scored_by_the_fold_ensemble(kfold_evaluated):
    recipe, _ = kfold_evaluated
    result = evaluate(recipe, split="test", figures=False)
    out = Path(recipe.output)
    test = json.loads((out / "fold_0" / "split.json").read_text())["test"]
    assert [r["case"] for r in result["per_case"]] == test
    assert result["out_of_fold"] is False and result["fold_ensemble_definition"]
    assert "postprocess_selection" not in result  # never chosen on test cases
    assert (out / "evaluate_test" / "metrics.json").is_file()


def test_kfold_evaluation_refuses_what_it_cannot_score_out_of_fold(kfold_evaluated):
    from lungseg.core.errors import CheckpointError, RecipeError

    recipe, _ = kfold_evaluated
    best = Path(recipe.output) / "fold_0" / "checkpoints" / "best.ckpt"
    with pytest.raises(RecipeError, match="--fold N to score fold N's checkpoint"):
        evaluate(recipe, best, overwrite=True)
    with pytest.raises(RecipeError, match="--split train: with split.folds 2"):
        evaluate(recipe, split="train", overwrite=True)
    three = dataclasses.replace(recipe, split=dataclasses.replace(recipe.split, folds=3))
    with pytest.raises(CheckpointError, match=r"fold\(s\) 2 of 3 have no checkpoints/best"):
        evaluate(three, overwrite=True)
