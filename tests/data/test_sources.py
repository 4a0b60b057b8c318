"""lungseg.data.sources: finding the cases of an MSD-style folder and preparing a recipe's data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from lungseg.core.errors import DataError, OutputError
from lungseg.core.recipe_sections import SyntheticConfig
from lungseg.data import download
from lungseg.data.msd import Case, find_cases, find_msd_root, locate_msd_root
from lungseg.data.sources import prepare_source


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.zeros((8, 8, 6), np.int16), np.eye(4)).to_filename(path)
    return path


def _msd(root: Path, ids: list[str], *, test_ids: tuple[str, ...] = ()) -> Path:
    for case_id in ids:
        _nifti(root / "imagesTr" / f"{case_id}.nii.gz")
        _nifti(root / "labelsTr" / f"{case_id}.nii.gz")
    for case_id in test_ids:
        _nifti(root / "imagesTs" / f"{case_id}.nii.gz")
    return root


def test_pairs_by_name_sorted_and_skips_hidden_files(tmp_path: Path) -> None:
    root = _msd(tmp_path, ["lung_003", "lung_001"])
    _nifti(root / "imagesTr" / "lung_010.nii")  # plain .nii is accepted too
    _nifti(root / "labelsTr" / "lung_010.nii")
    for folder in ("imagesTr", "labelsTr"):
        (root / folder / "._lung_001.nii.gz").write_bytes(b"macOS resource fork")
        (root / folder / ".DS_Store").write_bytes(b"")
        (root / folder / "notes.txt").write_text("not a scan")
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["lung_001", "lung_003", "lung_010"]
    assert cases[0] == Case(
        "lung_001", root / "imagesTr" / "lung_001.nii.gz", root / "labelsTr" / "lung_001.nii.gz"
    )
    assert cases[2].image.name == "lung_010.nii"


def test_dataset_json_decides_the_training_pairs(tmp_path: Path) -> None:
    root = _msd(tmp_path, ["lung_001", "lung_002", "lung_003"])
    (root / "imagesTr" / "._lung_002.nii.gz").write_bytes(b"junk")
    training = [
        {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
        for c in ("lung_003", "lung_001")
    ]
    (root / "dataset.json").write_text(json.dumps({"training": training, "test": []}))
    assert [c.case_id for c in find_cases(root)] == ["lung_001", "lung_003"]

    training.append({"image": "./imagesTr/lung_404.nii.gz", "label": "./labelsTr/lung_404.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DataError, match=r"lung_404\.nii\.gz.*lung_404\.nii\.gz"):
        find_cases(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json is not a readable"):
        find_cases(root)


def test_unpaired_files_are_all_named_in_one_message(tmp_path: Path) -> None:
    root = _msd(tmp_path, ["lung_001"])
    _nifti(root / "imagesTr" / "lung_002.nii.gz")
    _nifti(root / "imagesTr" / "lung_005.nii.gz")
    _nifti(root / "labelsTr" / "lung_007.nii.gz")
    with pytest.raises(DataError) as caught:
        find_cases(root)
    message = str(caught.value)
    assert "3 unpaired" in message
    assert "lung_002.nii.gz (no label)" in message and "lung_005.nii.gz (no label)" in message
    assert "lung_007.nii.gz (no image)" in message
    assert "lung_001" not in message


def test_images_ts_gives_unlabelled_cases(tmp_path: Path) -> None:
    root = _msd(tmp_path, ["lung_001"], test_ids=("lung_020", "lung_011"))
    cases = find_cases(root, labelled=False)
    assert [(c.case_id, c.label) for c in cases] == [("lung_011", None), ("lung_020", None)]
    with pytest.raises(DataError, match="imagesTs"):
        find_cases(_msd(tmp_path / "other", ["lung_001"]), labelled=False)


def test_missing_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*lungseg download msd --to"):
        find_cases(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no imagesTr"):
        find_cases(tmp_path)
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DataError, match="no labelsTr"):
        find_cases(tmp_path)
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "imagesTr" / "._lung_001.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"imagesTr holds no \.nii\.gz"):
        find_cases(tmp_path)


def test_msd_root_is_found_nested_but_not_in_hidden_folders(tmp_path: Path) -> None:
    assert locate_msd_root(tmp_path) is None
    _msd(tmp_path / ".staging" / "Task06_Lung", ["lung_001"])
    assert locate_msd_root(tmp_path) is None
    nested = _msd(tmp_path / "a" / "b" / "Task06_Lung", ["lung_001"])
    assert find_msd_root(tmp_path) == nested
    with pytest.raises(DataError, match="imagesTr/ and labelsTr/"):
        find_msd_root(tmp_path / "a" / "b" / "Task06_Lung" / "imagesTr")


def _data(source: str, root: Path, **extra: Any) -> SimpleNamespace:
    synthetic = SyntheticConfig(cases=3, seed=7, size=32, slices=20, abdomen_slices=5, test_cases=1)
    fields = {"url": None, "md5": None, "dataset": None, "synthetic": synthetic, **extra}
    return SimpleNamespace(source=source, root=str(root), **fields)


def test_synthetic_source_generates_once_and_only_into_its_own_folder(tmp_path: Path) -> None:
    data = _data("synthetic", tmp_path / "synth")
    data.synthetic = SyntheticConfig(
        cases=2, seed=0, size=16, slices=12, abdomen_slices=4, test_cases=1
    )
    root = prepare_source(data)
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert prepare_source(data) == root  # reused: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    data.synthetic.seed = 1  # the recipe changed: never silently the old data
    with pytest.raises(DataError, match=r"other settings \(data\.synthetic seed: 0 -> 1\)"):
        prepare_source(data)
    mine = _msd(tmp_path / "mine", ["lung_001"])  # a user's scans, no dataset.json, no marker
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match=r"did not make.*data\.source: folder"):
        prepare_source(_data("synthetic", mine))
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before


def test_folder_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.root"):
        prepare_source(_data("folder", tmp_path / "missing"))
    nested = _msd(tmp_path / "Task06_Lung", ["lung_001"])
    assert prepare_source(_data("folder", tmp_path)) == nested
    assert prepare_source(_data("folder", nested)) == nested


def test_download_sources_pass_defaults_and_skip_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(download, "download_msd", lambda *a: calls.append(a) or Path(a[0]))
    monkeypatch.setattr(download, "download_kaggle", lambda *a: calls.append(a) or Path(a[1]))
    prepare_source(_data("msd", tmp_path / "m"))
    prepare_source(_data("msd", tmp_path / "m", url="http://mirror/x.tar", md5="a" * 32))
    prepare_source(_data("kaggle", tmp_path / "k", dataset="someone/msd-lung"))
    assert calls == [
        (tmp_path / "m", download.MSD_URL, download.MSD_MD5),
        (tmp_path / "m", "http://mirror/x.tar", "a" * 32),
        ("someone/msd-lung", tmp_path / "k"),
    ]
    present = _msd(tmp_path / "have" / "Task06_Lung", ["lung_001"])
    assert prepare_source(_data("msd", tmp_path / "have")) == present
    assert prepare_source(_data("kaggle", tmp_path / "have", dataset="a/b")) == present
    assert len(calls) == 3


def test_synthetic_source_with_the_real_generator(tmp_path: Path) -> None:
    data = _data("synthetic", tmp_path / "synth")
    data.synthetic = SyntheticConfig(
        cases=2, seed=0, size=16, slices=12, abdomen_slices=4, test_cases=1
    )
    root = prepare_source(data)
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["lung_001", "lung_002"]
    assert [c.label for c in find_cases(root, labelled=False)] == [None]
    image, label = nib.load(str(cases[0].image)), nib.load(str(cases[0].label))
    assert image.shape == label.shape == (16, 16, 12)
    assert np.asarray(label.dataobj).any()  # the generator's tumours, labelled
