"""MSD and nnU-Net v2 dataset folders, laid out as each project documents them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from lungseg.core.errors import DataError
from lungseg.core.recipe import recipe_from_dict
from lungseg.data.msd import find_cases, locate_msd_root
from lungseg.preprocess.run import run_preprocess

from ..conftest import tiny_recipe_dict

NNUNET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "tumour": 1},
    "numTraining": 2,
    "file_ending": ".nii.gz",
}


def _nifti(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.full((6, 6, 4), value, np.int16), np.eye(4)).to_filename(path)
    return path


def _nnunet(root: Path, ids=("lung_001", "lung_003"), tests=("lung_002",), ending=".nii.gz"):
    """``Dataset006_Lung/``: nnU-Net v2's raw layout (dataset.json, ``_0000`` images)."""
    for case in ids:
        _nifti(root / "imagesTr" / f"{case}_0000{ending}")
        _nifti(root / "labelsTr" / f"{case}{ending}", 1)
    for case in tests:
        _nifti(root / "imagesTs" / f"{case}_0000{ending}")
    index = {**NNUNET_JSON, "numTraining": len(ids), "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(index))
    return root


def test_nnunet_v2_pairs_channel_0000_images_with_labels(tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "nnUNet_raw" / "Dataset006_Lung")
    assert locate_msd_root(tmp_path / "nnUNet_raw") == root
    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["lung_001", "lung_003"]
    assert cases[0].image == root / "imagesTr" / "lung_001_0000.nii.gz"
    assert cases[0].label == root / "labelsTr" / "lung_001.nii.gz"
    assert nib.load(cases[0].label).get_fdata().max() == 1  # the label, not the image
    tests = find_cases(root, labelled=False)
    assert [(c.case_id, c.image.name, c.label) for c in tests] == [
        ("lung_002", "lung_002_0000.nii.gz", None)
    ]


def test_nnunet_v2_with_plain_nii_file_ending(tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "Dataset006_Lung", ending=".nii")
    (root / "imagesTr" / "lung_009_0000.nii.gz").write_bytes(b"")  # another ending: not a case
    assert [c.image.name for c in find_cases(root)] == ["lung_001_0000.nii", "lung_003_0000.nii"]
    assert [c.case_id for c in find_cases(root, labelled=False)] == ["lung_002"]


def test_msd_dataset_json_as_the_decathlon_ships_it(tmp_path: Path) -> None:
    root = tmp_path / "Task06_Lung"
    for case in ("lung_001", "lung_003"):
        _nifti(root / "imagesTr" / f"{case}.nii.gz")
        _nifti(root / "labelsTr" / f"{case}.nii.gz", 1)
    _nifti(root / "imagesTs" / "lung_002.nii.gz")
    index = {
        "name": "Lung",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "cancer"},
        "numTraining": 2,
        "numTest": 1,
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
            for c in ("lung_001", "lung_003")
        ],
        "test": ["./imagesTs/lung_002.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(index))
    assert [c.case_id for c in find_cases(root)] == ["lung_001", "lung_003"]
    assert [c.case_id for c in find_cases(root, labelled=False)] == ["lung_002"]
    index["modality"] = {"0": "CT", "1": "PET"}
    (root / "dataset.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"json: modality lists 2 channels \(0: CT, 1: PET\)"):
        find_cases(root)


def test_channel_suffixes_without_dataset_json_pair_by_name(tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "Dataset006_Lung")
    (root / "dataset.json").unlink()
    assert [c.case_id for c in find_cases(root)] == ["lung_001", "lung_003"]
    assert [c.case_id for c in find_cases(root, labelled=False)] == ["lung_002"]
    _nifti(root / "imagesTr" / "lung_001_0001.nii.gz")
    with pytest.raises(DataError, match=r"lung_001_0001\.nii\.gz is a second image channel"):
        find_cases(root)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: _nifti(r / "imagesTr" / "lung_001_0001.nii.gz"), r"second image channel.*CT"),
        (lambda r: _nifti(r / "imagesTs" / "lung_002_0001.nii.gz"), r"lung_002_0001.*second"),
        (
            lambda r: (r / "labelsTr" / "lung_003.nii.gz").unlink(),
            r"1 unpaired .*lung_003_0000\.nii\.gz \(no label lung_003\.nii\.gz\)",
        ),
        (
            lambda r: _patch(r, channel_names={"0": "CT", "1": "CT2"}),
            r"dataset\.json: channel_names lists 2 channels \(0: CT, 1: CT2\); .*single-channel CT",
        ),
        (lambda r: _patch(r, numTraining=5), r"numTraining is 5 but .*holds 2 case"),
        (lambda r: _patch(r, file_ending=".mha"), r"file_ending '\.mha': lungseg reads NIfTI"),
        (
            lambda r: _nifti(r / "imagesTr" / "lung_004.nii.gz"),
            r"lung_004\.nii\.gz: no channel suffix; .*lung_004_0000\.nii\.gz",
        ),
        (
            lambda r: (r / "dataset.json").write_text('{"labels": {"0": "background"}}'),
            r"neither the MSD's 'training' list nor nnU-Net v2's keys",
        ),
        (lambda r: (r / "dataset.json").write_text("[1, 2]"), r"not a readable dataset\.json"),
        (lambda r: (r / "dataset.json").write_text("{oops"), r"not a readable JSON"),
        (
            lambda r: (r / "dataset.json").write_text('{"training": [{"img": 1}]}'),
            r"'training' list must hold \{'image'",
        ),
    ],
)
def test_bad_datasets_are_one_clear_error(tmp_path: Path, change, message) -> None:
    root = _nnunet(tmp_path / "Dataset006_Lung")
    change(root)
    with pytest.raises(DataError, match=message) as caught:
        find_cases(root)
        find_cases(root, labelled=False)
    assert "delete" not in str(caught.value)
    assert "\n" not in str(caught.value)


def _patch(root: Path, **changes) -> None:
    index = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**index, **changes}))


def _as_nnunet(src: Path, dst: Path, ids: list[str]) -> Path:
    """The synthetic MSD scans ``ids`` rewritten in nnU-Net v2's layout and naming."""
    for case in ids:
        (dst / "imagesTr").mkdir(parents=True, exist_ok=True)
        (dst / "labelsTr").mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "imagesTr" / f"{case}.nii.gz", dst / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(src / "labelsTr" / f"{case}.nii.gz", dst / "labelsTr" / f"{case}.nii.gz")
    (dst / "dataset.json").write_text(json.dumps({**NNUNET_JSON, "numTraining": len(ids)}))
    return dst


def test_an_nnunet_dataset_preprocesses_like_its_msd_twin(tiny_dataset: Path, tmp_path) -> None:
    ids = [c.case_id for c in find_cases(tiny_dataset)][:2]
    nnunet = _as_nnunet(tiny_dataset, tmp_path / "nnUNet_raw" / "Dataset006_Lung", ids)
    msd = tmp_path / "Task06_Lung"
    for folder in ("imagesTr", "labelsTr"):
        for case in ids:
            (msd / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_dataset / folder / f"{case}.nii.gz", msd / folder)
    stores = {}
    for name, root in (("nnunet", nnunet), ("msd", msd)):
        raw = tiny_recipe_dict(root, tmp_path / name)
        raw["data"] = {"source": "folder", "root": str(root)}
        report = run_preprocess(recipe_from_dict(raw, source=f"{name}.yaml"), workers=1)
        assert sorted(report.written) == ids
        stores[name] = zarr.open_group(raw["store"]["path"], mode="r")
    for case in ids:
        for key in ("image", "mask", "tumor_pixels"):
            got, want = stores["nnunet"][case][key][:], stores["msd"][case][key][:]
            np.testing.assert_array_equal(got, want, err_msg=f"{case}/{key}")
        assert stores["nnunet"][case]["tumor_pixels"][:].sum() > 0
