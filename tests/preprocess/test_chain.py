from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import pytest

from lungseg.core.errors import DataError
from lungseg.core.manager import load_registry
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.data.volume import Volume
from lungseg.preprocess.chain import Chain


def _chain(recipe: Recipe) -> Chain:
    return Chain.from_components(recipe.preprocess, load_registry())


def _volume(shape=(40, 50, 60), affine=None, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1000, 3071, size=shape).astype(np.float32)
    mask = (rng.random(shape) > 0.9).astype(np.uint8)
    return Volume(image, mask, np.diag([0.8, 0.8, 2.0, 1.0]) if affine is None else affine)


def test_default_chain_matches_the_seed_exactly():
    volume = _volume()
    out, trace = _chain(Recipe()).forward(volume)
    assert out.image.shape == (256, 256, 30) and out.mask.shape == (256, 256, 30)
    for k in (0, 17, 29):
        expected = cv2.resize(volume.image[:, :, 30 + k].astype(np.float64) / 3071, (256, 256))
        np.testing.assert_allclose(out.image[:, :, k], expected, rtol=1e-5, atol=1e-5)
        nearest = cv2.resize(volume.mask[:, :, 30 + k], (256, 256), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(out.mask[:, :, k], nearest)
    assert set(np.unique(out.mask)) <= {0, 1}
    assert [t["step"] for t in trace] == ["canonical", "skip-slices", "normalize", "resize"]


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "RAI", "PIR", "SLA"])
def test_canonical_makes_slice_zero_inferior_and_inverts(codes):
    # a volume whose world z grows with some array axis, in any orientation
    ras = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    target = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), target)
    data = nib.orientations.apply_orientation(ras, transform)
    affine = np.diag([1.0, 1.0, 2.0, 1.0]) @ nib.orientations.inv_ornt_aff(transform, ras.shape)
    assert "".join(nib.aff2axcodes(affine)) == codes
    chain = Chain.from_components(
        recipe_from_dict({}, ["preprocess=[{name: canonical}]"]).preprocess, load_registry()
    )
    out, trace = chain.forward(Volume(data, None, affine))
    np.testing.assert_array_equal(out.image, ras)  # back to RAS: the first slices are inferior
    assert "".join(nib.aff2axcodes(out.affine)) == "RAS"
    np.testing.assert_array_equal(chain.invert(out.image, trace, is_label=True), data)


def test_invert_restores_the_original_grid_for_labels_and_probabilities():
    volume = _volume(shape=(40, 50, 60))
    block = np.zeros((40, 50, 60), np.uint8)
    block[10:30, 12:40, 35:50] = 1
    volume.mask = block
    chain = _chain(Recipe())
    out, trace = chain.forward(volume)
    back = chain.invert(out.mask, trace, is_label=True)
    assert back.shape == (40, 50, 60)
    assert back[:, :, :30].sum() == 0  # skipped slices are background
    # nearest-neighbour up- then down-sampling may move an edge by one pixel, no more
    assert (back == block).mean() > 0.99
    np.testing.assert_array_equal(back[12:28, 14:38, 36:49], 1)
    probs = chain.invert(out.mask.astype(np.float32), trace, is_label=False)
    assert probs.dtype == np.float32 and probs.shape == (40, 50, 60)
    assert ((probs >= 0.5) == block.astype(bool)).mean() > 0.99


def test_affine_follows_the_crop_and_resize():
    volume = _volume(shape=(64, 64, 40))
    out, _ = _chain(
        recipe_from_dict({}, ["preprocess.1.count=10", "preprocess.3.size=32"])
    ).forward(volume)
    # voxel (0,0,0) of the output lies at slice 10 of the input; voxels are twice as wide
    np.testing.assert_allclose(out.affine[:3, 3], [0, 0, 20.0])
    np.testing.assert_allclose(np.diag(out.affine)[:3], [1.6, 1.6, 2.0])


def test_too_few_slices_is_a_clear_error():
    volume = _volume(shape=(16, 16, 20))
    volume.source = "scan.nii.gz"
    with pytest.raises(
        DataError, match=r"scan\.nii\.gz: has 20 slices but skip-slices drops the first 30"
    ):
        _chain(Recipe()).forward(volume)


def test_trace_from_another_chain_is_refused():
    volume = _volume(shape=(16, 16, 40))
    _, trace = _chain(Recipe()).forward(volume)
    other = _chain(recipe_from_dict({}, ["preprocess=[{name: canonical}]"]))
    with pytest.raises(DataError, match="does not match the chain"):
        other.invert(np.zeros((16, 16, 40)), trace, is_label=True)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("skip-slices", {"count": -1}, "count"),
        ("resize", {"size": 2}, "size"),
        ("normalize", {"divisor": 0}, "divisor"),
        ("normalize", {"clip": [5, 1]}, "clip"),
        ("lung-crop", {"threshold": 10}, "threshold"),
        ("lung-crop", {"margin_mm": -1}, "margin_mm"),
        ("lung-crop", {"min_component": 0}, "min_component"),
        ("lung-crop", {"min_slices": 0}, "min_slices"),
        ("lung-crop", {"gas_below": -100}, "gas_below"),
    ],
)
def test_bad_step_parameters(name, params, message):
    from lungseg.core.errors import RecipeError

    with pytest.raises(RecipeError, match=message):
        load_registry().create("preprocessor", name, params, "preprocess[0]")


# ----------------------------------------------------------------------------- memory layout


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("view", ["plain", "flip-x", "flip-y", "flip-xy", "swap-flip", "cropped"])
def test_resize_equals_per_slice_opencv_for_any_layout(order, view):
    from lungseg.plugins.preprocessing import _resize

    rng = np.random.default_rng(0)
    image = np.asarray(rng.random((50, 40, 7), dtype=np.float32), order=order)
    mask = np.asarray((rng.random((50, 40, 7)) > 0.5).astype(np.uint8), order=order)
    pick = {
        "plain": lambda a: a,
        "flip-x": lambda a: a[::-1],
        "flip-y": lambda a: a[:, ::-1],
        "flip-xy": lambda a: a[::-1, ::-1],
        "swap-flip": lambda a: np.swapaxes(a, 0, 1)[::-1],
        "cropped": lambda a: a[::-1, ::-1, 2:5],
    }[view]
    for array, interp in ((pick(image), cv2.INTER_LINEAR), (pick(mask), cv2.INTER_NEAREST)):
        got = _resize(array, (32, 24), interp)
        want = np.stack(
            [
                cv2.resize(np.ascontiguousarray(array[:, :, k]), (24, 32), interpolation=interp)
                for k in range(array.shape[2])
            ],
            axis=2,
        )
        assert got.shape == want.shape and got.dtype == array.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert np.moveaxis(got, 2, 0).flags.c_contiguous  # the store's (n, H, W) layout


def test_canonical_reorients_without_copying():
    volume = _volume(shape=(12, 14, 16), affine=np.diag([-1.0, -1.0, 2.0, 1.0]))  # LPS
    out, _ = _chain(recipe_from_dict({}, ["preprocess=[{name: canonical}]"])).forward(volume)
    assert np.shares_memory(out.image, volume.image)
    np.testing.assert_array_equal(out.image, volume.image[::-1, ::-1])


@pytest.mark.parametrize("owned", [False, True])
def test_normalize_overwrites_only_what_the_chain_owns(owned):
    volume = _volume(shape=(8, 8, 4))
    original = volume.image.copy()
    volume.owned = owned
    chain = _chain(recipe_from_dict({}, ["preprocess=[{name: normalize, divisor: 2}]"]))
    out, _ = chain.forward(volume)
    np.testing.assert_allclose(out.image, original / 2)
    assert out.image.dtype == np.float32
    assert np.shares_memory(out.image, volume.image) is owned
    if not owned:
        np.testing.assert_array_equal(volume.image, original)


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


def test_crop_slices_returns_the_contract_keys_and_a_view():
    from lungseg.api import CROP_KEYS, crop_slices, is_crop, uncrop_slices

    volume = _volume((6, 5, 20))
    out, info = crop_slices(volume, 4, 15)
    assert info == {"start": 4, "stop": 15, "depth": 20} and tuple(info) == CROP_KEYS
    assert is_crop(info) and not is_crop({"start": 4, "stop": 15})
    assert np.shares_memory(out.image, volume.image)
    assert out.affine[2, 3] == pytest.approx(volume.affine[2, 3] + 4 * volume.affine[2, 2])
    back = uncrop_slices(out.mask, info)
    np.testing.assert_array_equal(back[:, :, 4:15], volume.mask[:, :, 4:15])
    assert not back[:, :, :4].any() and not back[:, :, 15:].any()


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 5), (3, 21)])
def test_crop_slices_refuses_a_range_outside_the_volume(start, stop):
    from lungseg.api import crop_slices

    with pytest.raises(ValueError, match=f"crop {start}:{stop} does not lie within the 20"):
        crop_slices(_volume((6, 5, 20)), start, stop)


def test_kept_slices_follow_crops_on_the_canonical_grid():
    trace = [
        {"step": "canonical", "ornt": [], "shape": [6, 5, 40]},
        {"step": "skip-slices", "start": 10, "stop": 40, "depth": 40},
        {"step": "lung-crop", "start": 2, "stop": 25, "depth": 30, "lung": [3, 24]},
        {"step": "resize", "in_plane": [6, 5]},
    ]
    assert Chain.canonical_depth(trace, 23) == 40
    assert Chain.kept_slices(trace, 40) == list(range(12, 35))
    assert Chain.canonical_depth(trace[:1], 40) == 40  # no crop: the chain's output
    broken = [*trace[:2], {**trace[2], "depth": 31}]
    with pytest.raises(DataError, match="'lung-crop' recorded depth=31 but received 30"):
        Chain.kept_slices(broken, 40)


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


@pytest.mark.parametrize("layout", ["C", "F", "slices"])
def test_uncrop_keeps_the_memory_layout_and_zeroes_only_the_dropped_slices(layout):
    from lungseg.preprocess.chain import uncrop_slices

    kept = np.arange(1, 1 + 6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    array = {
        "C": np.ascontiguousarray(kept),
        "F": np.asfortranarray(kept),
        "slices": np.moveaxis(np.ascontiguousarray(np.moveaxis(kept, 2, 0)), 0, 2),
    }[layout]
    out = uncrop_slices(array, {"start": 3, "stop": 7, "depth": 9})
    assert out.shape == (6, 5, 9) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, 3:7], kept)
    assert not out[:, :, :3].any() and not out[:, :, 7:].any()
    order = np.argsort(array.strides)
    np.testing.assert_array_equal(np.argsort(out.strides), order)  # the same layout
