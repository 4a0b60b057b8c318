"""The ``lung-crop`` preprocessor and the lung finder it uses: synthetic and real CT."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.core.errors import DataError
from lungseg.core.manager import load_registry
from lungseg.core.recipe import recipe_from_dict
from lungseg.data.volume import Volume
from lungseg.preprocess.chain import Chain

# ----------------------------------------------------------------------------- lung crop


def _lung_chain(**params):
    crop = {"name": "lung-crop", **params}
    return Chain.from_components(
        recipe_from_dict({"preprocess": [{"name": "canonical"}, crop]}).preprocess,
        load_registry(),
    )


@pytest.mark.parametrize(("seed", "size", "slices", "abdomen"), [(0, 64, 72, 30), (3, 48, 60, 12)])
def test_lung_crop_drops_the_abdomen_and_keeps_every_tumour_slice(seed, size, slices, abdomen):
    from lungseg.data.synth import make_case

    image, label, affine = make_case(seed, size=size, slices=slices, abdomen_slices=abdomen)
    volume = Volume(image.astype(np.float32), label, affine, "synthetic.nii.gz")
    chain = _lung_chain(margin_mm=0)
    out, trace = chain.forward(volume)
    info = trace[1]
    # the lungs start at the diaphragm (the first thorax slice) and reach the top slice
    assert abdomen - 1 <= info["lung"][0] <= abdomen + 3 and info["lung"][1] == slices
    assert info["start"] == info["lung"][0] and info["stop"] == slices
    assert out.mask.sum() == label.sum()  # no tumour voxel is cropped away
    kept = Chain.kept_slices(trace, slices)
    assert kept == list(range(info["start"], slices)) and out.image.shape[2] == len(kept)
    back = chain.invert(out.mask, trace, is_label=True)
    np.testing.assert_array_equal(back, label)


def test_lung_crop_margin_is_in_millimetres():
    from lungseg.data.synth import make_case

    image, label, affine = make_case(0, size=64, slices=72, abdomen_slices=30)
    spacing = float(np.linalg.norm(affine[:3, 2]))
    volume = Volume(image.astype(np.float32), label, affine)
    _, trace = _lung_chain(margin_mm=10).forward(volume)
    assert trace[1]["lung"][0] - trace[1]["start"] == int(np.ceil(10 / spacing))


def test_lung_crop_refuses_a_scan_without_lung_and_too_short_a_crop():
    from lungseg.data.synth import make_case

    solid = Volume(np.full((32, 32, 20), 40, np.float32), None, np.eye(4), "solid.nii.gz")
    with pytest.raises(DataError, match=r"solid\.nii\.gz: lung-crop found no lung"):
        _lung_chain().forward(solid)
    image, label, affine = make_case(0, size=32, slices=40, abdomen_slices=10)
    volume = Volume(image.astype(np.float32), label, affine, "short.nii.gz")
    with pytest.raises(DataError, match=r"short\.nii\.gz: has 40 slices and lung-crop keeps"):
        _lung_chain(min_slices=100).forward(volume)


def test_lung_crop_on_normalised_intensities_says_where_it_belongs():
    from lungseg.data.synth import make_case

    image, _, affine = make_case(0, size=32, slices=40, abdomen_slices=10)
    volume = Volume(image.astype(np.float32) / 3071, None, affine, "scaled.nii.gz")
    with pytest.raises(DataError, match="come before normalize"):
        _lung_chain().forward(volume)


def test_lung_crop_on_a_real_abdominal_ct_finds_the_lung_bases_not_bowel_gas():
    from ..conftest import SHARED_CT

    if not SHARED_CT.is_file():
        pytest.skip("shared/data/real-ct is not here")
    from lungseg.data.volume import read_image

    image, geometry = read_image(SHARED_CT)
    out, trace = _lung_chain().forward(Volume(image, None, geometry.affine, str(SHARED_CT)))
    start, stop = trace[1]["lung"]
    # 112 slices at 3 mm, RAS: the lung bases are the top ~12 slices; the colon's gas,
    # anterior and from slice ~55 up, is mostly below -950 HU and is not taken for lung
    assert 90 <= start < stop == 112
    assert out.image.shape[2] == trace[1]["stop"] - trace[1]["start"]


def zoomed_case(
    seed: int, size: int, slices: int, abdomen: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic scan reconstructed with a field of view zoomed inside the chest.

    ``make_case`` cropped in-plane (the affine moved to match): the lungs reach the image
    border on every slice that holds tumour, as on a real scan with a tight field of view.
    """
    from lungseg.data.synth import make_case

    image, label, affine = make_case(seed, size=size, slices=slices, abdomen_slices=abdomen)
    x0, y0 = size // 5, size // 5 + size // 16
    box = np.s_[x0 : size - x0, y0 : size - x0]
    shift = np.eye(4)
    shift[:2, 3] = x0, y0
    return np.ascontiguousarray(image[box]), np.ascontiguousarray(label[box]), affine @ shift


@pytest.mark.parametrize(("seed", "size", "slices", "abdomen"), [(2, 64, 72, 30), (4, 32, 40, 10)])
def test_lung_crop_keeps_the_tumour_when_the_view_cuts_through_the_lungs(
    seed, size, slices, abdomen
):
    from lungseg.api import air_inside_body

    image, label, affine = zoomed_case(seed, size, slices, abdomen)
    tumour = np.flatnonzero(label.any((0, 1)))
    touching = (image[[0, -1]] < -400).any((0, 1)) | (image[:, [0, -1]] < -400).any((0, 1))
    assert touching[tumour].all()  # the lungs touch the border wherever the tumour is
    # air that touches the border was taken for outside air: these lungs were lost there
    missed = ~(air_inside_body(image) & (image > -950)).any((0, 1))
    assert missed[tumour].mean() > 0.5
    volume = Volume(image.astype(np.float32), label, affine, "zoomed.nii.gz")
    out, trace = _lung_chain(margin_mm=0).forward(volume)
    assert abdomen - 1 <= trace[1]["lung"][0] <= abdomen + 3 and trace[1]["lung"][1] == slices
    assert out.mask.sum() == label.sum()  # every tumour voxel kept


def test_lung_air_adds_border_air_only_where_the_view_cuts_the_lungs():
    from lungseg.api import air_inside_body
    from lungseg.data.synth import make_case
    from lungseg.plugins.lung_crop import lung_air

    image = make_case(0, size=32, slices=40, abdomen_slices=10)[0].astype(np.float32)
    # the whole body in view: the air touching the border is outside air (gas), left out
    np.testing.assert_array_equal(lung_air(image), air_inside_body(image))
    zoomed = zoomed_case(0, 32, 40, 10)[0].astype(np.float32)
    found, enclosed = lung_air(zoomed), air_inside_body(zoomed)
    assert (found >= enclosed).all() and found.sum() > 2 * enclosed.sum()
    assert np.median(zoomed[found & ~enclosed]) > -950  # parenchyma, not gas
    assert not (found & ~enclosed)[:, :, :10].any()  # no border air taken in the abdomen


def test_lung_crop_on_a_zoomed_real_ct_keeps_the_lung_bases():
    from ..conftest import SHARED_CT

    if not SHARED_CT.is_file():
        pytest.skip("shared/data/real-ct is not here")
    from lungseg.data.volume import read_image

    image, geometry = read_image(SHARED_CT)
    zoomed = np.ascontiguousarray(image[30:-30, 25:-25])  # the lung bases reach the border
    assert (zoomed[:, :, 105][[0, -1]] < -400).any() or (zoomed[:, :, 105][:, [0, -1]] < -400).any()
    _, trace = _lung_chain().forward(Volume(zoomed, None, geometry.affine, str(SHARED_CT)))
    start, stop = trace[1]["lung"]
    assert start <= 101 and stop == 112  # the lung bases (the top ~12 slices) stay


def test_lung_crop_keeps_the_preprocessor_contract():
    from lungseg import testing
    from lungseg.data.synth import make_case
    from lungseg.plugins.lung_crop import LungCrop

    image, label, affine = make_case(2, size=32, slices=48, abdomen_slices=12)
    probe = Volume(image.astype(np.float32), label, affine, "synthetic chest")
    testing.check_preprocessor(LungCrop(), volume=probe, min_dice=1.0)


# ----------------------------------------------------------------------------- crop contract


# ----------------------------------------------------------------------------- lung finder


def test_the_lung_finder_keeps_air_inside_the_body_slice_by_slice():
    from lungseg.api import air_inside_body

    image = np.full((12, 12, 3), -1000.0, dtype=np.float32)  # air around the patient
    image[2:10, 2:10] = 40.0  # the body
    image[3:6, 3:9, :2] = -850.0  # a lung, slices 0-1
    image[3:6, 5, 0] = 40.0  # a vessel across it splits slice 0's lung in two
    image[2:10, 9:12, 2] = -850.0  # slice 2: lung-density air reaching the border
    found = air_inside_body(image, -400.0)
    assert found.dtype == bool and found.shape == image.shape
    expected = (image < -400.0) & False
    expected[3:6, 3:9, :2] = True
    expected[3:6, 5, 0] = False
    np.testing.assert_array_equal(found, expected)
    for k in range(3):  # a slice alone gives the same answer (connectivity is in-plane)
        np.testing.assert_array_equal(air_inside_body(image[:, :, k], -400.0), found[:, :, k])
    with pytest.raises(ValueError, match="expected an"):
        air_inside_body(image[0, 0], -400.0)
