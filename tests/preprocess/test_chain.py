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
