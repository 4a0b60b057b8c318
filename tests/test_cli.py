"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from lungseg.cli import main

from .conftest import lungseg


def test_plugins_lists_every_kind_with_provider_and_parameters():
    result = lungseg("plugins")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for kind in ("preprocessors:", "samplers:", "models:", "losses:", "metrics:"):
        assert kind in out
    assert "unet" in out and "[lungseg:unet]" in out and "features=" in out
    assert "skip-slices" in out and "count=30" in out


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, (), "recipe file not found"),
        ("model: [unclosed", (), "not valid YAML"),
        ("model: {name: unte}", (), "model.name: unknown model 'unte'; did you mean 'unet'"),
        ("trainr: {}", (), "trainr: unknown key"),
        ("{}", ("--set", "trainer.max_epochs=x"), "trainer.max_epochs: expected int"),
        ("split: {folds: 2}", ("--fold", "2"), "split.folds 2; pick a fold in 0..1, or all"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, content, args, message):
    recipe = tmp_path / "r.yaml"
    if content is not None:
        recipe.write_text(content)
    result = lungseg("train", str(recipe), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    result = lungseg("--debug", "train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_unreadable_and_mismatched_nifti_are_named(tmp_path, tiny_dataset):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "dataset.json").unlink()
    label = data / "labelsTr" / "lung_002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 40), np.uint8), np.eye(4)), str(label))
    (data / "imagesTr" / "lung_003.nii.gz").write_bytes(b"not a nifti at all")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"data: {{source: folder, root: {data}}}\nstore: {{path: {tmp_path / 's.zarr'}}}\n"
        "preprocess: [{name: canonical}, {name: skip-slices, count: 10},"
        " {name: resize, size: 16}]\n"
    )
    result = lungseg("preprocess", str(recipe), "--workers", "2")
    assert result.returncode == 3  # a data error
    err = result.stderr
    assert "Traceback" not in err
    assert "lung_002" in err and "label shape (8, 8, 40) differs from image shape" in err
    assert "lung_003" in err and "not a readable NIfTI" in err
    assert "2 of 5 cases failed" in err
    from lungseg.store.slices import SliceStore

    assert SliceStore(str(tmp_path / "s.zarr")).cases() == ["lung_001", "lung_004", "lung_005"]


def test_synth_writes_an_msd_dataset(tmp_path):
    result = lungseg(
        "synth",
        str(tmp_path / "syn"),
        "--cases",
        "2",
        "--size",
        "32",
        "--slices",
        "30",
        "--abdomen-slices",
        "8",
        "--test-cases",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "synthetic dataset" in result.stdout
    from lungseg.data.msd import find_cases

    cases = find_cases(tmp_path / "syn")
    assert [c.case_id for c in cases] == ["lung_001", "lung_002"]
    assert nib.load(str(cases[0].image)).shape == (32, 32, 30)
    assert len(find_cases(tmp_path / "syn", labelled=False)) == 1
    bad = lungseg("synth", str(tmp_path / "bad"), "--cases", "0")
    assert bad.returncode == 2 and "cases" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_predict_with_several_checkpoints_and_the_recorded_postprocessing(
    tiny_trained, tmp_path, capsys
):
    _, best = tiny_trained
    run = tmp_path / "kfold"
    members = [run / f"fold_{k}" / "checkpoints" / "best.ckpt" for k in (0, 1)]
    for member in members:
        member.parent.mkdir(parents=True)
        shutil.copy(best, member)
    selection = {"chosen": ["min-size"], "candidates": {"min-size": 0.5}, "baseline": 0.4}
    (run / "metrics.json").write_text(json.dumps({"postprocess_selection": selection}))
    scan = tiny_trained[0].data.root + "/imagesTs/lung_006.nii.gz"
    args = ["predict", scan, "--out", str(tmp_path / "out"), "--postprocess", "auto"]
    for member in members:
        args += ["--checkpoint", str(member)]
    result = lungseg(*args)
    assert result.returncode == 0, result.stderr
    assert f"mask: {tmp_path / 'out' / 'lung_006.nii.gz'}" in result.stdout
    # auto stands alone; a folder without checkpoints is named
    assert main([*args, "--postprocess", "min-size"]) == 2
    assert "--postprocess auto: applies the recorded choice" in capsys.readouterr().err
    assert (
        main(["predict", scan, "--out", str(tmp_path / "o2"), "--checkpoint", str(tmp_path)]) == 3
    )
    assert "neither checkpoints/best.ckpt nor fold_<k>" in capsys.readouterr().err
