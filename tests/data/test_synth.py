"""Tests of the synthetic chest-CT generator (small volumes, so the whole file runs in seconds)."""

from __future__ import annotations

import inspect
import json
import pathlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lungseg.core.errors import RecipeError
from lungseg.core.recipe import SyntheticConfig
from lungseg.data.synth import make_case, write_dataset

SMALL = {"size": 32, "slices": 40, "abdomen_slices": 10}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A written dataset: three labelled cases and two test scans."""
    out = tmp_path_factory.mktemp("synth") / "Task06_Lung"
    assert write_dataset(out, cases=3, seed=7, test_cases=2, **SMALL) == out
    return out


def _check_tumours(image: np.ndarray, label: np.ndarray, abdomen_slices: int) -> None:
    """Asserts 1 to 3 tumours, all in thorax slices, each visible and embedded in lung."""
    assert set(np.unique(label)) <= {0, 1}
    assert not label[:, :, :abdomen_slices].any()
    components, count = ndimage.label(label)
    assert 1 <= count <= 3
    for index in range(1, count + 1):
        tumour = components == index
        ring = ndimage.binary_dilation(tumour, iterations=2) & ~tumour
        assert np.mean(image[ring] < -500) > 0.75  # lung all around
        assert -60 < np.median(image[tumour]) < 120  # soft tissue, clearly above lung


def test_make_case_types_shapes_and_geometry() -> None:
    image, label, affine = make_case(3, **SMALL)
    assert image.dtype == np.int16 and label.dtype == np.uint8 and affine.dtype == np.float64
    assert image.shape == label.shape == (32, 32, 40)
    assert affine.shape == (4, 4)
    zooms = np.abs(np.diag(affine)[:3])
    assert (zooms > 0).all() and zooms[0] == zooms[1] != zooms[2]
    assert 1.5 <= zooms[2] <= 2.5 and 300 < zooms[0] * 32 < 500  # field of view in mm
    _check_tumours(image, label, 10)


def test_hounsfield_units_are_plausible() -> None:
    image, label, _ = make_case(11, size=64, slices=72, abdomen_slices=30)
    assert image.min() >= -1024 and image.max() <= 3071
    assert abs(np.median(image[:4, :4]) + 1000) < 30  # air around the body
    thorax = image[:, :, 30:]
    in_plane = ndimage.generate_binary_structure(2, 1)[..., None]
    body = ndimage.binary_fill_holes(thorax > -500, in_plane)  # torso and lungs, no outside air
    assert -900 < np.median(thorax[body & (thorax < -500)]) < -780  # lung parenchyma
    assert (image > 400).sum() > 100  # bone: spine and ribs
    assert -20 < np.median(image[16:48, 16:48, :30]) < 80  # abdomen: soft tissue, no lung
    _check_tumours(image, label, 30)


@pytest.mark.parametrize("seed", range(8))
def test_tumours_inside_lung_for_many_seeds(seed: int) -> None:
    image, label, _ = make_case(seed, **SMALL)
    _check_tumours(image, label, 10)


def test_make_case_is_deterministic() -> None:
    first, second, other = make_case(5, **SMALL), make_case(5, **SMALL), make_case(6, **SMALL)
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()
    assert first[0].tobytes() != other[0].tobytes()
    assert first[1].tobytes() != other[1].tobytes()


def test_dataset_json_lists_exactly_the_files(dataset: pathlib.Path) -> None:
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "cancer"}
    assert meta["name"] and meta["description"]
    assert (meta["numTraining"], meta["numTest"]) == (3, 2)
    names = [f"lung_{i:03d}.nii.gz" for i in (1, 2, 3)]
    assert meta["training"] == [
        {"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names
    ]
    assert meta["test"] == ["./imagesTs/lung_004.nii.gz", "./imagesTs/lung_005.nii.gz"]
    listed = {e["image"] for e in meta["training"]} | {e["label"] for e in meta["training"]}
    listed |= set(meta["test"])
    on_disk = {f"./{p.relative_to(dataset).as_posix()}" for p in dataset.rglob("*.nii.gz")}
    assert listed == on_disk  # test scans have no labels


def test_written_nifti_read_back(dataset: pathlib.Path) -> None:
    meta = json.loads((dataset / "dataset.json").read_text())
    for entry in meta["training"]:
        image = nib.load(dataset / entry["image"])
        label = nib.load(dataset / entry["label"])
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert image.shape == label.shape == (32, 32, 40)
        assert np.allclose(image.affine, label.affine)
        assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
        zooms = image.header.get_zooms()
        assert np.allclose(zooms, np.abs(np.diag(image.affine)[:3]), rtol=1e-5)
        assert min(zooms) > 0 and zooms[0] != zooms[2]
        data = np.asarray(image.dataobj)
        mask = np.asarray(label.dataobj)
        assert data.dtype == np.int16 and mask.dtype == np.uint8
        _check_tumours(data, mask, 10)
    for entry in meta["test"]:
        assert nib.load(dataset / entry).shape == (32, 32, 40)


def test_write_dataset_is_deterministic(dataset: pathlib.Path, tmp_path: pathlib.Path) -> None:
    again = write_dataset(tmp_path / "again", cases=3, seed=7, test_cases=2, **SMALL)
    other = write_dataset(tmp_path / "other", cases=1, seed=8, **SMALL)
    name = "imagesTr/lung_001.nii.gz"
    original = np.asarray(nib.load(dataset / name).dataobj)
    assert np.array_equal(original, np.asarray(nib.load(again / name).dataobj))
    assert not np.array_equal(original, np.asarray(nib.load(other / name).dataobj))
    cases = [np.asarray(nib.load(p).dataobj) for p in sorted(dataset.glob("imagesT*/*.nii.gz"))]
    assert len({c.tobytes() for c in cases}) == 5  # every case differs


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"cases": 0}, "cases", "0"),
        ({"test_cases": -1}, "test_cases", "-1"),
        ({"size": 8}, "size", "8"),
        ({"size": 32.0}, "size", "32.0"),
        ({"size": True}, "size", "True"),
        ({"slices": 14}, "slices", "14"),
        ({"abdomen_slices": -1}, "abdomen_slices", "-1"),
        ({"seed": -3}, "seed", "-3"),
    ],
)
def test_bad_arguments_raise_recipe_error(
    tmp_path: pathlib.Path, kwargs: dict[str, object], name: str, value: str
) -> None:
    arguments = {"cases": 1, **SMALL, **kwargs}
    with pytest.raises(RecipeError, match=rf"^{name}: .*got {value}$"):
        write_dataset(tmp_path / "out", **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    arguments.pop("cases")
    arguments.pop("test_cases", None)
    if name not in ("cases", "test_cases"):
        with pytest.raises(ValueError, match=name):
            make_case(arguments.pop("seed", 0), **arguments)  # type: ignore[arg-type]


def test_defaults_are_the_recipes(tmp_path: pathlib.Path) -> None:
    defaults = SyntheticConfig()
    signature = inspect.signature(write_dataset).parameters
    for name in ("cases", "seed", "size", "slices", "abdomen_slices", "test_cases"):
        assert signature[name].default == getattr(defaults, name)
    for name in ("size", "slices", "abdomen_slices"):
        assert inspect.signature(make_case).parameters[name].default == getattr(defaults, name)
    out = write_dataset(tmp_path / "d", cases=1, **SMALL)  # test scans by default: run predicts
    assert len(list((out / "imagesTs").glob("*.nii.gz"))) == defaults.test_cases >= 1
    assert not list(out.rglob(".partial-*"))
