"""Ensembles: the mean probability of the members, run folders expanded, mismatches refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from lungseg.core.build import assemble
from lungseg.core.errors import CheckpointError
from lungseg.core.recipe import Component, recipe_from_dict
from lungseg.inference.ensemble import Ensemble, load_predictor, resolve_checkpoints
from lungseg.inference.postselect import recorded_choice
from lungseg.inference.predict import predict
from lungseg.inference.predictor import predict_probs

from ..conftest import tiny_recipe_dict


def _nets(tiny_dataset: Path, tmp_path: Path, n: int) -> list[torch.nn.Module]:
    parts = assemble(recipe_from_dict(tiny_recipe_dict(tiny_dataset, tmp_path)))
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(parts.model().eval())
    return nets


@pytest.mark.parametrize("tta", [False, True])
def test_the_ensemble_yields_the_mean_of_the_members_probabilities(tiny_dataset, tmp_path, tta):
    nets = _nets(tiny_dataset, tmp_path, 3)
    slices = np.random.default_rng(0).normal(0, 0.3, (5, 32, 32)).astype(np.float32)
    each = [predict_probs(net, slices, batch_size=2, tta=tta) for net in nets]
    both = predict_probs(Ensemble(nets), slices, batch_size=2, tta=tta)
    np.testing.assert_allclose(both, np.mean(each, axis=0), atol=1e-5)
    assert not np.allclose(each[0], each[1], atol=1e-3)  # the members do differ
    x = torch.from_numpy(slices[:, None])
    with torch.no_grad():
        assert torch.equal(Ensemble(nets[:1])(x), nets[0](x))  # one member: its own logits


def _store(path: Path, ckpt: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _altered(best: Path, path: Path, *, noise: float = 0.0, **recipe_changes) -> Path:
    """A copy of ``best`` with its weights perturbed and its stored recipe changed."""
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(1)
    for key, value in ckpt["state_dict"].items():
        if value.is_floating_point() and noise:
            ckpt["state_dict"][key] = value + noise * torch.randn(value.shape, generator=generator)
    for section, change in recipe_changes.items():
        stored = ckpt["lungseg"]["recipe"]
        stored[section] = change if isinstance(change, list) else {**stored[section], **change}
    return _store(path, ckpt)


@pytest.mark.slow
def test_members_with_another_chain_or_context_are_refused_naming_both(tiny_trained, tmp_path):
    recipe, best = tiny_trained
    chain = [dict(step) for step in recipe.preprocess_dict()]
    chain[-1]["size"] = 16
    other = _altered(best, tmp_path / "a" / "best.ckpt", preprocess=chain)
    with pytest.raises(CheckpointError) as err:
        load_predictor([best, other])
    message = str(err.value)
    assert message.startswith(f"{best} and {other}: trained with different preprocessing")
    assert "'size': 16" in message
    context = _altered(best, tmp_path / "b" / "best.ckpt", data={"context": 1})
    with pytest.raises(CheckpointError, match=r"different data\.context \(0 vs 1\)") as err:
        load_predictor([best, context])
    assert str(err.value).startswith(f"{best} and {context}:")


@pytest.fixture
def fold_run(tiny_trained, tmp_path) -> Path:
    """A k-fold run folder of two folds: the tiny run's best, and it with other weights."""
    _, best = tiny_trained
    run = tmp_path / "kfold"
    _store(run / "fold_0" / "checkpoints" / "best.ckpt", torch.load(best, weights_only=True))
    _altered(best, run / "fold_1" / "checkpoints" / "best.ckpt", noise=0.05)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"split": {"folds": 2}}))
    return run


@pytest.mark.slow
def test_predict_with_a_kfold_run_folder_averages_every_fold(fold_run, tiny_dataset, tmp_path):
    members = [fold_run / f"fold_{k}" / "checkpoints" / "best.ckpt" for k in (0, 1)]
    assert resolve_checkpoints([fold_run]) == members
    assert resolve_checkpoints([members[1], members[1], fold_run]) == members[::-1]
    scan = sorted((tiny_dataset / "imagesTs").iterdir())[0]
    probs = []
    for name, checkpoint in [("a", members[0]), ("b", members[1]), ("both", fold_run)]:
        report = predict(checkpoint, [scan], tmp_path / name, prob=True)
        assert not report.failed, report.failed
        probs.append(np.asarray(nib.load(str(report.extra[0])).dataobj))
    np.testing.assert_allclose(probs[2], (probs[0] + probs[1]) / 2, atol=1e-5)
    assert not np.allclose(probs[0], probs[1], atol=1e-4)
    # the same ensemble named member by member
    again = predict([str(m) for m in members], [scan], tmp_path / "again", prob=True)
    np.testing.assert_array_equal(np.asarray(nib.load(str(again.extra[0])).dataobj), probs[2])


@pytest.mark.slow
def test_run_folders_missing_a_fold_or_ambiguous_are_refused(fold_run):
    (fold_run / "recipe.yaml").write_text(yaml.safe_dump({"split": {"folds": 3}}))
    with pytest.raises(CheckpointError, match=r"fold\(s\) 2 have no checkpoints/best\.ckpt"):
        resolve_checkpoints([fold_run])
    (fold_run / "recipe.yaml").write_text(yaml.safe_dump({"split": {"folds": 2}}))
    shutil.copytree(fold_run / "fold_0" / "checkpoints", fold_run / "checkpoints")
    with pytest.raises(CheckpointError, match="holds both its own checkpoints/best.ckpt and fold"):
        resolve_checkpoints([fold_run])
    (fold_run / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither checkpoints/best.ckpt nor fold_"):
        resolve_checkpoints([fold_run / "empty"])


@pytest.mark.slow
def test_postprocess_auto_applies_the_recorded_choice(fold_run, tiny_dataset, tmp_path):
    members = [fold_run / f"fold_{k}" / "checkpoints" / "best.ckpt" for k in (0, 1)]
    with pytest.raises(CheckpointError, match=r"--postprocess auto: no postprocess_selection"):
        recorded_choice([fold_run])
    chosen = ["largest-components", "min-size"]
    metrics = {"postprocess_selection": {"chosen": chosen, "candidates": {}}}
    (fold_run / "metrics.json").write_text(json.dumps(metrics))
    expected = [Component(name) for name in chosen]
    for named in ([fold_run], members, members[:1]):  # one fold falls back to the k-fold run's
        assert recorded_choice(named) == (expected, fold_run / "metrics.json")
    scan = tiny_dataset / "imagesTr" / "lung_001.nii.gz"
    low = 0.05  # the tiny, barely trained network then predicts scattered voxels
    auto = predict(fold_run, [scan], tmp_path / "auto", threshold=low, postprocess="auto")
    named = predict(fold_run, [scan], tmp_path / "named", threshold=low, postprocess=expected)
    plain = predict(fold_run, [scan], tmp_path / "plain", threshold=low)
    a, b, c = (np.asarray(nib.load(str(r.written[0])).dataobj) for r in (auto, named, plain))
    np.testing.assert_array_equal(a, b)
    assert a.sum() <= c.sum()
