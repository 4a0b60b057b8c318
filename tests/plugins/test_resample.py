"""The ``resample`` step: fixed in-plane spacing in mm, centred pad or crop, exact inversion."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg import testing
from lungseg.core.errors import DataError, RecipeError
from lungseg.core.manager import load_registry
from lungseg.core.recipe import recipe_from_dict
from lungseg.data.volume import Volume
from lungseg.preprocess.chain import Chain


def _step(**params):
    return load_registry().create("preprocessor", "resample", params, "preprocess[0]")


def _blobs(shape: tuple[int, int, int], spacing: tuple[float, float], seed: int = 0) -> Volume:
    """An HU volume with two elliptic blobs (round in mm) of tumour, on an RAS grid."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    mask = np.zeros(shape, dtype=np.uint8)
    for cx, cy, r in ((0.4, 0.45, 9.0), (0.7, 0.6, 6.0)):  # centres (fractions), radii in mm
        dx, dy = (x - cx * shape[0]) * spacing[0], (y - cy * shape[1]) * spacing[1]
        mask[(dx**2 + dy**2 <= r**2) & (z >= 1) & (z < shape[2] - 1)] = 1
    image = rng.normal(-800, 30, shape).astype(np.float32)
    image[mask == 1] = 40.0
    return Volume(image, mask, np.diag([*spacing, 2.5, 1.0]), "blobs.nii.gz")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine)[:3, :2], axis=0)


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    return (np.asarray(affine) @ np.append(index, 1.0))[:3]


@pytest.mark.parametrize(
    ("shape", "spacing", "params"),
    [
        ((37, 29, 5), (0.7, 0.7), {"spacing": 1.0, "size": 32}),  # odd, down-sampled, both
        ((37, 29, 5), (0.7, 1.3), {"spacing": 1.0, "size": [41, 44]}),  # anisotropic, pad
        ((45, 51, 4), (1.3, 0.9), {"spacing": 0.8, "size": 33}),  # up-sampled, crop
        ((33, 47, 3), (0.9, 0.6), {"spacing": [0.6, 1.1], "size": [64, 27]}),  # pad x, crop y
    ],
)
def test_invert_returns_the_original_grid_and_mask(shape, spacing, params):
    volume = _blobs(shape, spacing)
    step = _step(**params)
    out, info = step.apply(volume)
    size = params["size"] if isinstance(params["size"], list) else [params["size"]] * 2
    assert out.image.shape == (*size, shape[2]) and out.mask.shape == out.image.shape
    want = params["spacing"] if isinstance(params["spacing"], list) else [params["spacing"]] * 2
    np.testing.assert_allclose(_spacing(out.affine), want, rtol=1e-9)  # exactly what was asked
    np.testing.assert_allclose(out.affine[:3, 2], volume.affine[:3, 2])  # slices untouched
    back = step.invert(out.mask, info, is_label=True)
    probs = step.invert(out.mask.astype(np.float32), info, is_label=False)
    assert back.shape == probs.shape == shape and back.dtype == np.uint8
    covered = step.invert(np.ones_like(out.mask), info, is_label=True).astype(bool)
    assert _dice(back, volume.mask & covered) >= 0.95
    assert _dice(probs >= 0.5, volume.mask & covered) >= 0.95
    # the affine says where the tumour is: its world centroid does not move
    if out.mask.sum() == volume.mask.sum():  # nothing cropped away
        shift = _world_centroid(out.mask, out.affine) - _world_centroid(volume.mask, volume.affine)
        assert np.abs(shift).max() < max(want)


@pytest.mark.parametrize("layout", ["slices", "fortran"])
def test_invert_writes_niftis_layout_with_the_same_values_as_per_slice_warps(layout):
    """The inverse comes out in Fortran order (no transposing copy when written), and its
    values are exactly those of warping each slice as the store's layout does."""
    from lungseg.plugins.resample import _warp

    volume = _blobs((45, 38, 6), (0.7, 0.9))
    step = _step(spacing=1.1, size=[30, 36], lungs=False)
    _, info = step.apply(volume)
    probs = np.random.default_rng(7).random((6, 30, 36), dtype=np.float32)  # (n, H, W)
    grid = np.moveaxis(probs, 0, 2)
    if layout == "fortran":
        grid = np.asfortranarray(grid)
    scale = [1.0 / a for a in info["scale"]]
    shift = [-b / a for a, b in zip(info["scale"], info["shift"], strict=True)]
    for array, is_label, interp in ((grid, False, 1), ((grid > 0.7).astype(np.uint8), True, 0)):
        back = step.invert(array, info, is_label=is_label)
        assert back.shape == (45, 38, 6) and back.flags.f_contiguous
        want = _warp(array, scale, shift, (45, 38), interp, 0, None)  # the store's layout
        assert not want.flags.f_contiguous
        np.testing.assert_array_equal(back, want)


def test_padding_at_the_input_spacing_inverts_exactly():
    volume = _blobs((37, 29, 5), (0.8, 0.8))
    step = _step(spacing=0.8, size=[48, 40])
    out, info = step.apply(volume)
    # centred: 11 and 11 columns of padding split 5 + 6, placed by a whole-pixel shift
    assert info["scale"] == [1.0, 1.0] and info["shift"] == [-5.0, -5.0]
    np.testing.assert_array_equal(out.image[5:42, 5:34], volume.image)
    np.testing.assert_array_equal(out.mask[5:42, 5:34], volume.mask)
    pad = volume.image.min()
    assert (out.image[:5] == pad).all() and (out.image[42:] == pad).all()
    assert out.mask.sum() == volume.mask.sum()
    np.testing.assert_array_equal(step.invert(out.mask, info, is_label=True), volume.mask)
    np.testing.assert_array_equal(step.invert(out.image, info, is_label=False), volume.image)


def test_cropping_at_the_input_spacing_keeps_the_centre_exactly():
    volume = _blobs((37, 29, 5), (0.8, 0.8))
    step = _step(spacing=0.8, size=[31, 24])
    out, info = step.apply(volume)
    np.testing.assert_array_equal(out.image, volume.image[3:34, 2:26])
    back = step.invert(out.mask, info, is_label=True)
    expected = np.zeros_like(volume.mask)
    expected[3:34, 2:26] = volume.mask[3:34, 2:26]
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize(("pad", "normalized"), [(None, False), (None, True), (-1000.0, False)])
def test_padding_value(pad, normalized):
    volume = _blobs((20, 18, 3), (1.0, 1.0))
    volume.image[0, 0, 0] = -2048.0  # a scanner's out-of-field value
    if normalized:
        volume = Volume(volume.image / 3071, volume.mask, volume.affine)
    out, _ = _step(spacing=1.0, size=32, pad=pad).apply(volume)
    expected = volume.image.min() if pad is None else pad
    assert out.image[0, 0, 2] == pytest.approx(expected) and out.mask[0, 0, 2] == 0


@pytest.mark.parametrize("layout", ["fortran", "flipped", "c"])
def test_any_memory_layout_gives_the_same_slices(layout):
    volume = _blobs((37, 29, 4), (0.7, 1.2))
    reference, _ = _step(spacing=1.0, size=[30, 36]).apply(volume)
    image, mask = volume.image, volume.mask
    if layout == "fortran":
        image, mask = np.asfortranarray(image), np.asfortranarray(mask)
    elif layout == "flipped":
        image = np.ascontiguousarray(image[::-1, ::-1])[::-1, ::-1]  # negative strides
        mask = np.ascontiguousarray(mask[::-1])[::-1]
    else:
        image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
    out, _ = _step(spacing=1.0, size=[30, 36]).apply(Volume(image, mask, volume.affine))
    np.testing.assert_allclose(out.image, reference.image, rtol=1e-4)  # OpenCV's fixed point
    np.testing.assert_array_equal(out.mask, reference.mask)
    assert out.image.transpose(2, 0, 1).flags.c_contiguous  # (Z, X, Y) slices, as the store
    assert out.mask.transpose(2, 0, 1).flags.c_contiguous


def test_the_lung_box_crops_in_plane_and_keeps_the_tumour():
    from lungseg.data.synth import make_case

    image, label, affine = make_case(0, size=64, slices=48, abdomen_slices=12)
    volume = Volume(image.astype(np.float32), label, affine, "synthetic.nii.gz")
    step = _step(spacing=5.0, size=96, lungs=True, margin_mm=10)
    out, info = step.apply(volume)
    x0, x1, y0, y1 = info["box"]
    assert 0 < x0 < x1 < 64 and 0 < y0 < y1 < 64  # the body wall and the air are cut off
    assert out.mask.sum() > 0
    back = step.invert(out.mask, info, is_label=True)
    assert back.shape == label.shape and _dice(back, label) >= 0.9
    assert not back[:x0].any() and not back[x1:].any()
    covered = step.invert(np.ones_like(out.mask), info, is_label=True)[:, :, 0].astype(bool)
    assert covered[x0:x1, y0:y1].all() and not covered[:x0].any() and not covered[:, y1:].any()
    assert (out.image[[0, -1]] == image.min()).all()  # beyond the box: padding (air)


def test_the_lung_box_on_normalised_intensities_says_where_it_belongs():
    from lungseg.data.synth import make_case

    image, _, affine = make_case(0, size=32, slices=40, abdomen_slices=10)
    volume = Volume(image.astype(np.float32) / 3071, None, affine, "scaled.nii.gz")
    with pytest.raises(
        DataError, match=r"scaled\.nii\.gz: resample found no lung.*before normalize"
    ):
        _step(lungs=True).apply(volume)


def test_the_seed_chain_with_resample_inverts_to_the_scan_geometry():
    from lungseg.data.synth import make_case

    image, label, affine = make_case(1, size=64, slices=48, abdomen_slices=12)  # LPS
    recipe = recipe_from_dict(
        {},
        [
            "preprocess=[{name: canonical}, {name: skip-slices, count: 12}, "
            "{name: normalize}, {name: resample, spacing: 6.0, size: 72}]"
        ],
    )
    chain = Chain.from_components(recipe.preprocess, load_registry())
    out, trace = chain.forward(Volume(image.astype(np.float32), label, affine))
    assert out.image.shape == (72, 72, 36)
    np.testing.assert_allclose(_spacing(out.affine), [6.0, 6.0])
    assert out.image.min() == pytest.approx(image.min() / 3071)  # padded with normalised air
    back = chain.invert(out.mask, trace, is_label=True)
    assert back.shape == label.shape and _dice(back, label) >= 0.95


@pytest.mark.parametrize(
    ("params", "min_dice"),
    [
        ({}, 0.9),  # the probe (20x18x40 at 0.8 mm) at 1.5 mm: its 6-pixel block shrinks to 3
        ({"spacing": 0.6, "size": 32}, 0.95),  # up-sampled and padded
        ({"spacing": 0.8, "size": 16}, 1.0),  # cropped at the input spacing: exact
        ({"spacing": 0.8, "size": 33}, 1.0),  # padded at the input spacing: exact
        # x up-sampled, y down-sampled: the probe's 6-pixel block loses a row
        ({"spacing": [0.5, 1.1], "size": [37, 15]}, 0.9),
    ],
)
def test_contract(params, min_dice):
    testing.check_registered("preprocessor", "resample", params, min_dice=min_dice)


def test_contract_with_the_lung_box():
    from lungseg.data.synth import make_case

    image, label, affine = make_case(2, size=32, slices=48, abdomen_slices=12)
    probe = Volume(image.astype(np.float32), label, affine, "synthetic chest")
    params = {"spacing": 8.0, "size": 48, "lungs": True}
    testing.check_registered("preprocessor", "resample", params, volume=probe, min_dice=0.9)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"spacing": 0}, r"`spacing` must be > 0, got 0"),
        ({"spacing": [1.0]}, r"`spacing` must be a number or a list \[x, y\]"),
        ({"size": 4}, r"`size` must be >= 8, got 4"),
        ({"size": [64, 64.5]}, r"`size` must be a whole number or a list \[x, y\]"),
        ({"pad": "air"}, r"`pad` must be a number or null"),
        ({"lungs": "yes"}, r"`lungs` must be true or false"),
        ({"margin_mm": -1}, r"`margin_mm` must be a number >= 0"),
    ],
)
def test_bad_parameters_name_the_key(params, message):
    with pytest.raises(RecipeError, match=rf"preprocess\[0\]: .*resample.*{message}"):
        _step(**params)


def test_an_affine_without_in_plane_spacing_is_a_clear_error():
    volume = Volume(np.zeros((8, 8, 2), np.float32), None, np.diag([0.0, 1.0, 1.0, 1.0]), "f.nii")
    with pytest.raises(DataError, match=r"f\.nii: its affine gives no in-plane spacing"):
        _step().apply(volume)


def test_resample_is_registered_by_lungseg():
    assert load_registry().get("preprocessor", "resample").plugin == "lungseg:resample"
