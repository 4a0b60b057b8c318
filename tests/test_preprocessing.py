from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import pytest

from lungseg.errors import DataError
from lungseg.manager import load_registry
from lungseg.preprocessing import Chain
from lungseg.recipe import Recipe, recipe_from_dict
from lungseg.volume import Volume


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
    ],
)
def test_bad_step_parameters(name, params, message):
    from lungseg.errors import RecipeError

    with pytest.raises(RecipeError, match=message):
        load_registry().create("preprocessor", name, params, "preprocess[0]")
