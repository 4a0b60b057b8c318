"""Prediction back to the scan: batched resizing, layouts, and the written .nii.gz.

The reference for every inverse is the per-slice OpenCV path the chain used before
(``cv2.resize`` slice by slice, a zero volume for the dropped slices, the reorientation):
labels must match it exactly, probabilities within 1e-6.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from lungseg.core.manager import load_registry
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.data.volume import Volume, read_image, write_mask, write_nifti
from lungseg.plugins.preprocessing import Resize, nearest_indices, resize_batched
from lungseg.preprocess.chain import Chain

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PROB_TOL = 5e-5
"""Largest difference allowed between a batched and a per-slice probability (in [0, 1])."""


def _per_slice(array: np.ndarray, shape: tuple[int, int], interp: int) -> np.ndarray:
    """The old inverse resize: ``cv2.resize`` on each contiguous slice, stacked on axis 2."""
    return np.stack(
        [
            cv2.resize(np.ascontiguousarray(array[:, :, k]), shape[::-1], interpolation=interp)
            for k in range(array.shape[2])
        ],
        axis=2,
    )


def _layouts(array: np.ndarray) -> dict[str, np.ndarray]:
    """``array`` as C order, Fortran order and the predictor's slice-first buffer."""
    return {
        "C": np.ascontiguousarray(array),
        "F": np.asfortranarray(array),
        "slices": np.moveaxis(np.ascontiguousarray(np.moveaxis(array, 2, 0)), 0, 2),
    }


SIZES = [
    ((16, 16), (32, 32)),
    ((32, 24), (50, 77)),
    ((96, 96), (333, 512)),
    ((40, 30), (17, 23)),
    ((256, 256), (400, 333)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("grid", "shape"), SIZES)
def test_batched_labels_equal_per_slice_nearest_exactly(device, grid, shape):
    rng = np.random.default_rng(1)
    labels = (rng.random((*grid, 5)) > 0.7).astype(np.uint8)
    want = _per_slice(labels, shape, cv2.INTER_NEAREST)
    for name, array in _layouts(labels).items():
        got = resize_batched(array, shape, is_label=True, device=device)
        assert got.dtype == np.uint8 and got.flags.f_contiguous, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("grid", "shape"), SIZES)
def test_batched_probabilities_equal_per_slice_linear_within_tolerance(device, grid, shape):
    probs = np.random.default_rng(2).random((*grid, 5), dtype=np.float32)
    want = _per_slice(probs, shape, cv2.INTER_LINEAR)
    for name, array in _layouts(probs).items():
        got = resize_batched(array, shape, is_label=False, device=device)
        assert got.dtype == np.float32 and got.flags.f_contiguous, name
        np.testing.assert_allclose(got, want, rtol=0, atol=PROB_TOL, err_msg=name)


def test_nearest_indices_are_opencvs():
    for size_in, size_out in [(256, 512), (96, 333), (512, 96), (7, 7), (3, 1000)]:
        ramp = np.arange(size_in, dtype=np.float32)[None, :]
        row = cv2.resize(ramp, (size_out, 1), interpolation=cv2.INTER_NEAREST)[0]
        np.testing.assert_array_equal(nearest_indices(size_in, size_out), row.astype(np.int64))


def _chain(recipe: Recipe) -> Chain:
    return Chain.from_components(recipe.preprocess, load_registry())


def _old_invert(array: np.ndarray, trace: list[dict], interp: int) -> np.ndarray:
    """The default chain's inverse as it was: per-slice resize, zero volume, reorientation."""
    steps = {t["step"]: t for t in trace}
    back = _per_slice(array, tuple(steps["resize"]["in_plane"]), interp)
    crop = steps["skip-slices"]
    full = np.zeros((*back.shape[:2], crop["depth"]), back.dtype)
    full[:, :, crop["start"] : crop["stop"]] = back
    original = np.asarray(steps["canonical"]["ornt"])
    ras = nib.orientations.axcodes2ornt("RAS")
    return nib.orientations.apply_orientation(full, nib.orientations.ornt_transform(ras, original))


@pytest.mark.parametrize("device", [None, *DEVICES])
def test_the_default_chain_inverts_as_before_in_niftis_layout(device):
    rng = np.random.default_rng(3)
    shape = (40, 36, 45)
    lps = np.diag([-0.8, -0.8, 2.0, 1.0])  # DICOM's orientation: canonical flips x and y
    volume = Volume(rng.uniform(-1000, 500, shape).astype(np.float32), None, lps)
    chain = _chain(recipe_from_dict({}, ["preprocess.1.count=5", "preprocess.3.size=32"]))
    out, trace = chain.forward(volume)
    assert out.image.shape == (32, 32, 40)
    probs = rng.random((40, 32, 32), dtype=np.float32)  # what the network gives: (n, H, W)
    on_grid = np.moveaxis(probs, 0, 2)
    got = chain.invert(on_grid, trace, is_label=False, device=device)
    assert got.shape == shape and np.abs(got.strides[:2]).tolist() == [4, 4 * shape[0]]
    np.testing.assert_allclose(got, _old_invert(on_grid, trace, cv2.INTER_LINEAR), atol=PROB_TOL)
    labels = (on_grid > 0.8).astype(np.uint8)
    got = chain.invert(labels, trace, is_label=True, device=device)
    np.testing.assert_array_equal(got, _old_invert(labels, trace, cv2.INTER_NEAREST))
    assert got[:, :, :5].sum() == 0 and got.sum() > 0  # skipped slices are background


def test_invert_passes_the_device_only_to_steps_that_take_it():
    seen = []

    class WithDevice:
        def apply(self, volume):
            return volume, {}

        def invert(self, array, info, *, is_label, device=None):
            seen.append(device)
            return array

    class Without:
        def apply(self, volume):
            return volume, {}

        def invert(self, array, info, *, is_label):
            return array + 1

    chain = Chain([("a", WithDevice()), ("b", Without())])
    trace = [{"step": "a"}, {"step": "b"}]
    array = np.zeros((2, 2, 2))
    np.testing.assert_array_equal(chain.invert(array, trace, is_label=False, device="cpu"), 1)
    chain.invert(array, trace, is_label=False)
    assert seen == ["cpu", None]


def test_resize_invert_on_the_cpu_is_opencvs_per_slice_path():
    probs = np.random.default_rng(4).random((8, 8, 3), dtype=np.float32)
    got = Resize(8).invert(probs, {"in_plane": [20, 12]}, is_label=False, device="cpu")
    assert got.flags.f_contiguous
    np.testing.assert_allclose(got, _per_slice(probs, (20, 12), cv2.INTER_LINEAR), atol=PROB_TOL)


# ------------------------------------------------------------------------ the written file


@pytest.mark.parametrize("layout", ["F", "C", "flipped"])
def test_a_written_nii_gz_reads_back_identically_with_nibabel_and_gzip(tmp_path: Path, layout):
    rng = np.random.default_rng(5)
    mask = np.asfortranarray((rng.random((30, 20, 12)) > 0.9).astype(np.uint8))
    probs = rng.random((30, 20, 12), dtype=np.float32)
    arrange = {
        "F": np.asfortranarray,
        "C": np.ascontiguousarray,
        "flipped": lambda a: np.asfortranarray(a)[::-1, ::-1],
    }[layout]
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    for name, array in (("mask", arrange(mask)), ("prob", arrange(probs))):
        packed = write_nifti(tmp_path / f"{name}.nii.gz", array, affine=affine)
        plain = write_nifti(tmp_path / f"{name}.nii", array, affine=affine)
        np.testing.assert_array_equal(np.asarray(nib.load(packed).dataobj), array)
        np.testing.assert_array_equal(np.asarray(nib.load(plain).dataobj), array)
        raw = gzip.decompress(packed.read_bytes())  # one standard gzip stream
        assert raw == plain.read_bytes()
        # the same bytes nibabel writes itself: a standard NIfTI-1 file
        reference = tmp_path / f"nibabel-{name}.nii"
        image = nib.Nifti1Image(array, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm")
        nib.save(image, reference)
        assert raw == reference.read_bytes()
    header = (tmp_path / "mask.nii.gz").read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08" and header[3] & 0x08 == 0  # no file name stored
    assert header[4:8] == b"\0\0\0\0"  # time 0: the same mask gives the same bytes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_mask_written_for_a_reference_scan_reads_back_with_its_geometry(tmp_path: Path):
    scan = np.random.default_rng(6).integers(-1000, 1000, (24, 20, 10)).astype(np.int16)
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    ref = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(scan, affine), ref)
    mask = np.asfortranarray(scan > 500)[::-1]
    for name in ("mask.nii.gz", "mask.nii"):
        out = write_mask(tmp_path / name, mask, ref)
        back, geometry = read_image(out)  # lungseg's own reader (ISA-L for .gz)
        np.testing.assert_array_equal(back, mask)
        np.testing.assert_allclose(geometry.affine, affine)
