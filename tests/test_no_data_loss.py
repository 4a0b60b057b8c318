"""Ordinary user mistakes, through the real command line: nothing of the user's is lost.

Each scenario runs ``lungseg`` in a subprocess on real NIfTI files and checks that the exit
status is 2, that the message is one line naming the path, and that every file that was there
before is byte-identical afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_recipe_dict
from .test_cli import lungseg


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders`` with its bytes."""
    return {
        str(p): p.read_bytes()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_refused(result, *words: str) -> str:
    """Exit 2 and one line on stderr, holding every one of ``words``."""
    message = result.stderr.strip()
    assert result.returncode == 2, result.stdout + result.stderr
    assert message.startswith("lungseg: error: ") and "\n" not in message, message
    assert "Traceback" not in message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def user_scans(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A user's own MSD-style folder (no dataset.json, no lungseg marker), real NIfTI files."""
    root = tmp_path / "my_scans"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        shutil.copytree(tiny_dataset / sub, root / sub)
    return root


def _recipe(tmp_path: Path, data_root: Path, **changes) -> Path:
    raw = tiny_recipe_dict(data_root, tmp_path)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_recipe_without_data_source_never_writes_over_the_users_scans(
    user_scans: Path, tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path, user_scans, data={"root": str(user_scans)})  # no `source`
    before = snapshot(user_scans)
    result = lungseg("preprocess", str(recipe))
    assert_refused(result, str(user_scans), "did not make", "data.source: folder")
    assert snapshot(user_scans) == before
    assert not (tmp_path / "store.zarr").exists()
    # The fix the message names works, and still leaves the scans alone.
    result = lungseg("preprocess", str(recipe), "--set", "data.source=folder", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert snapshot(user_scans) == before


def test_synth_writes_only_into_new_empty_or_its_own_folders(
    user_scans: Path, tmp_path: Path
) -> None:
    before = snapshot(user_scans)
    small = ("--cases", "1", "--size", "16", "--slices", "12", "--abdomen-slices", "2")
    assert_refused(lungseg("synth", str(user_scans), *small), str(user_scans), "did not make")
    assert snapshot(user_scans) == before
    ours = tmp_path / "synthetic"
    assert lungseg("synth", str(ours), *small).returncode == 0
    made = snapshot(ours)
    assert_refused(lungseg("synth", str(ours), *small, "--seed", "3"), "--overwrite")
    assert snapshot(ours) == made
    assert lungseg("synth", str(ours), *small, "--seed", "3", "--overwrite").returncode == 0
    assert snapshot(ours) != made


@pytest.mark.parametrize("where", ["data", "inside-data", "output", "user-folder"])
def test_preprocess_overwrite_never_deletes_what_lungseg_did_not_make(
    where: str, user_scans: Path, tmp_path: Path
) -> None:
    user_folder = tmp_path / "notes"
    user_folder.mkdir()
    (user_folder / "README.txt").write_text("my notes\n")
    store = {
        "data": user_scans,
        "inside-data": user_scans / "imagesTr",
        "output": tmp_path / "run",
        "user-folder": user_folder,
    }[where]
    recipe = _recipe(tmp_path, user_scans, data={"source": "folder", "root": str(user_scans)})
    before = snapshot(user_scans, user_folder)
    for extra in ((), ("--overwrite",)):
        result = lungseg("preprocess", str(recipe), "--set", f"store.path={store}", *extra)
        assert_refused(result, "store.path")
        assert snapshot(user_scans, user_folder) == before


def test_download_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "thesis.pdf").write_bytes(b"%PDF-1.4 mine")
    before = snapshot(folder)
    # Refused before any connection: the URL is never reached.
    result = lungseg("download", "msd", "--to", str(folder), "--url", "http://127.0.0.1:9/t.tar")
    assert_refused(result, str(folder), "did not make")
    assert snapshot(folder) == before


@pytest.fixture
def scans_and_checkpoint(tiny_trained, user_scans: Path) -> tuple[Path, Path]:
    """A folder of the user's scans to predict, and a trained checkpoint."""
    _, best = tiny_trained
    return user_scans / "imagesTs", best


def test_predict_never_writes_over_its_inputs_or_other_files(
    scans_and_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    scans, best = scans_and_checkpoint
    before = snapshot(scans)
    ckpt = ("--checkpoint", str(best))
    # --out is the inputs' own folder: the masks would replace the scans.
    assert_refused(lungseg("predict", str(scans), "--out", str(scans), *ckpt), "input scan")
    assert_refused(
        lungseg("predict", str(scans), "--out", str(scans), *ckpt, "--overwrite"), "input scan"
    )
    assert snapshot(scans) == before
    # Bad settings: one line each, nothing written.
    out = tmp_path / "masks"
    for bad in (("--batch-size", "0"), ("--threshold", "1.5"), ("--threshold", "0")):
        assert_refused(lungseg("predict", str(scans), "--out", str(out), *ckpt, *bad), bad[0])
    assert not out.exists()
    # A first predict writes; a second refuses to replace its masks unless told to.
    assert lungseg("predict", str(scans), "--out", str(out), *ckpt).returncode == 0
    written = snapshot(out)
    assert len([p for p in written if p.endswith(".nii.gz")]) == 1
    result = lungseg("predict", str(scans), "--out", str(out), *ckpt, "--threshold", "0.01")
    assert_refused(result, "exists", "--overwrite")
    assert snapshot(out) == written
    result = lungseg(
        "predict", str(scans), "--out", str(out), *ckpt, "--threshold", "0.01", "--overwrite"
    )
    assert result.returncode == 0, result.stderr
    assert snapshot(out) != written
    assert snapshot(scans) == before


def test_train_refuses_an_output_holding_another_runs_checkpoints(tiny_trained) -> None:
    recipe, _ = tiny_trained
    run = Path(recipe.output)
    before = snapshot(run)
    result = lungseg("train", recipe.source_file)
    assert_refused(result, str(run), "--resume", "--overwrite")
    assert snapshot(run) == before


def test_evaluate_other_splits_write_into_their_own_folder(tiny_trained, tmp_path: Path) -> None:
    from lungseg.core.errors import OutputError
    from lungseg.inference.evaluate import evaluate

    recipe, best = tiny_trained
    recipe = dataclasses.replace(recipe, output=str(tmp_path / "run"))
    val = evaluate(recipe, best, figures=False)
    val_files = snapshot(tmp_path / "run")
    train = evaluate(recipe, best, "train", figures=False)
    assert (val["split"], train["split"]) == ("val", "train")
    assert json.loads((tmp_path / "run" / "evaluate_train" / "metrics.json").read_text()) == train
    after = snapshot(tmp_path / "run")
    assert {k: v for k, v in after.items() if k in val_files} == val_files  # val untouched
    with pytest.raises(OutputError, match="metrics.json exists.*--overwrite"):
        evaluate(recipe, best, "train", figures=False)
    assert snapshot(tmp_path / "run") == after
    evaluate(recipe, best, "train", figures=False, overwrite=True)
