"""The ``hard`` synthetic preset: variety, lesion kinds and empty scans; ``easy`` unchanged."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lungseg.cli import main
from lungseg.core.recipe_sections import DataConfig, SyntheticConfig
from lungseg.core.safety import read_marker
from lungseg.data.sources import prepare_source
from lungseg.data.synth import make_case
from lungseg.data.synth_hard import THICKNESSES, HardCase, hard_case
from lungseg.plugins.lung_crop import lung_extent

SMALL = {"size": 32, "slices": 40, "abdomen_slices": 10}
#: Case seeds as ``write_dataset`` derives them for dataset seed 0.
SEEDS = [int(np.random.SeedSequence([0, i]).generate_state(1)[0]) for i in range(30)]
IN_PLANE = ndimage.generate_binary_structure(2, 1)[..., None]


@pytest.fixture(scope="module")
def cases() -> list[HardCase]:
    return [hard_case(seed, **SMALL) for seed in SEEDS]


def _digest(arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()


def test_easy_preset_is_byte_identical_to_the_quickstarts_generator():
    # recorded from the generator before the hard preset existed (the quickstart's scans)
    small = make_case(5, **SMALL)
    assert _digest(small) == "f4024af14b9e43132c972ee74070b4962b8c72ff512b8f67820aab9cf3358985"
    assert _digest(make_case(0)) == (
        "52b022a89c4e55a45bf7b2712046b993659e1369131394dd97dbeff0aaea0040"
    )
    assert _digest(make_case(5, **SMALL, preset="easy")) == _digest(small)


def test_hard_is_deterministic_for_a_seed_and_differs_between_seeds():
    first, again = make_case(7, **SMALL, preset="hard"), make_case(7, **SMALL, preset="hard")
    assert _digest(first) == _digest(again)
    assert _digest(first) != _digest(make_case(8, **SMALL, preset="hard"))
    assert _digest(first) != _digest(make_case(7, **SMALL))  # not the easy scan
    case = hard_case(7, **SMALL)
    assert _digest((case.image, case.label, case.affine)) == _digest(first)


def test_hard_types_shapes_and_hounsfield_units(cases):
    for case in cases:
        assert case.image.dtype == np.int16 and case.label.dtype == np.uint8
        assert case.image.shape == case.label.shape == (32, 32, 40)
        assert set(np.unique(case.label)) <= {0, 1}
        assert not case.label[:, :, :10].any()  # the abdomen holds no tumour
        assert case.image.min() >= -1024 and case.image.max() <= 3071
        assert (case.image > 300).sum() > 20  # bone: spine and ribs
    image = hard_case(SEEDS[0], size=64, slices=72, abdomen_slices=30).image
    thorax = image[:, :, 30:]
    body = ndimage.binary_fill_holes(thorax > -500, IN_PLANE)
    assert -900 < np.median(thorax[body & (thorax < -500)]) < -750  # lung parenchyma
    assert abs(np.median(image[:3, :3]) + 1010) < 30  # air around the body


def test_about_a_fifth_of_the_scans_hold_no_tumour(cases):
    empty = [not case.label.any() for case in cases]
    assert 0.1 <= np.mean(empty) <= 0.34
    for case, none in zip(cases, empty, strict=True):
        assert none == (not case.lesions)
        assert sum(lesion.voxels for lesion in case.lesions) == int(case.label.sum())


def test_spacing_varies_by_scan_and_is_written_in_the_affine(cases, tmp_path):
    in_plane = np.array([-case.affine[0, 0] for case in cases]) * 32 / 512  # at a 512 matrix
    thickness = {float(case.affine[2, 2]) for case in cases}
    assert in_plane.min() >= 0.6 and in_plane.max() <= 1.0 and np.ptp(in_plane) > 0.2
    assert thickness <= set(THICKNESSES) and len(thickness) >= 4
    out = tmp_path / "hard"
    assert main(["synth", str(out), "--preset", "hard", "--cases", "3", "--test-cases", "1",
                 "--size", "32", "--slices", "40", "--abdomen-slices", "10"]) == 0  # fmt: skip
    assert read_marker(out)["params"]["preset"] == "hard"
    assert "preset hard" in json.loads((out / "dataset.json").read_text())["description"]
    zooms = set()
    for path in sorted(out.glob("imagesT*/*.nii.gz")):
        image = nib.load(path)
        assert np.allclose(image.header.get_zooms(), np.abs(np.diag(image.affine)[:3]))
        zooms.add(image.header.get_zooms())
        case_seed = int(np.random.SeedSequence([0, int(path.name[5:8]) - 1]).generate_state(1)[0])
        expected = make_case(case_seed, **SMALL, preset="hard")
        np.testing.assert_array_equal(np.asarray(image.dataobj), expected[0])
    assert len(zooms) == 4


def test_the_synthetic_source_generates_the_hard_preset(tmp_path):
    synthetic = SyntheticConfig(cases=1, test_cases=0, seed=3, preset="hard", **SMALL)
    root = prepare_source(DataConfig(root=str(tmp_path / "data"), synthetic=synthetic))
    case_seed = int(np.random.SeedSequence([3, 0]).generate_state(1)[0])
    image = np.asarray(nib.load(root / "imagesTr" / "lung_001.nii.gz").dataobj)
    np.testing.assert_array_equal(image, make_case(case_seed, **SMALL, preset="hard")[0])


def test_some_lesions_touch_the_chest_wall(cases):
    touching = [(c, lesion) for c in cases for lesion in c.lesions if lesion.touches_wall]
    assert len(touching) >= 3
    assert any(lesion.site == "juxta-pleural" for _, lesion in touching)
    for case, lesion in touching:  # as far out as the lung reaches, in the lesion's slices
        parts, _ = ndimage.label(case.label, np.ones((3, 3, 3)))
        one = parts == parts[lesion.centre]
        for k in np.flatnonzero(one.any((0, 1))):
            body = ndimage.binary_fill_holes(case.image[:, :, k] > -500)
            depth = ndimage.distance_transform_edt(body)
            lung = body & (case.image[:, :, k] < -500)
            if lung.any() and depth[one[:, :, k]].min() <= depth[lung].min() + 1.5:
                break
        else:
            pytest.fail(f"lesion at {lesion.centre} does not reach the chest wall")


def test_several_lesions_in_some_scans_and_sizes_from_nodules_to_masses(cases):
    counts = [ndimage.label(c.label, np.ones((3, 3, 3)))[1] for c in cases]
    assert max(counts) >= 3 and sum(n >= 2 for n in counts) >= 3
    for case, n in zip(cases, counts, strict=True):
        assert n == len(case.lesions)  # one piece each, never touching another
    diameters = [lesion.diameter_mm for c in cases for lesion in c.lesions]
    assert min(diameters) < 10 and max(diameters) >= 30
    sites = {lesion.site for c in cases for lesion in c.lesions}
    assert sites == {"parenchyma", "juxta-pleural", "vessel"}
    assert any(lesion.spiculated for c in cases for lesion in c.lesions)
    at_64 = [hard_case(seed, size=64, slices=72, abdomen_slices=30) for seed in SEEDS[:8]]
    assert any(lesion.touches_vessel for c in at_64 for lesion in c.lesions)  # vessels > 1 voxel


def test_hard_tumours_are_soft_tissue_and_lung_crop_keeps_them(cases):
    for case in cases:
        extent = lung_extent(case.image.astype(np.float32))
        assert extent is not None
        parts, count = ndimage.label(case.label, np.ones((3, 3, 3)))
        for index in range(1, count + 1):
            tumour = parts == index
            slices = np.flatnonzero(tumour.any((0, 1)))
            assert extent[0] <= slices.min() and slices.max() < extent[1]
            if tumour.sum() >= 8:  # small or thin ones are blurred into the lung around them
                assert np.percentile(case.image[tumour], 75) > -300
                assert -600 < np.median(case.image[tumour]) < 200
