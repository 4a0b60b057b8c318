"""Robustness on a real scanner's file (an abdomen/pelvis CT: int32 HU, 3 mm, little lung).

Skipped where the shared real-CT folder is absent (a fresh clone elsewhere)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lungseg.core.manager import load_registry
from lungseg.core.recipe import Recipe
from lungseg.data.volume import Volume, read_image
from lungseg.preprocess.chain import Chain

from ..conftest import SHARED_CT

pytestmark = pytest.mark.skipif(not SHARED_CT.is_file(), reason="real CT sample not available")


def test_real_ct_reads_as_float32_hounsfield_units():
    image, geometry = read_image(SHARED_CT)
    raw = nib.load(str(SHARED_CT))
    assert image.dtype == np.float32
    assert image.shape == raw.shape == geometry.shape
    assert geometry.orientation == "".join(nib.aff2axcodes(raw.affine))
    np.testing.assert_allclose(geometry.spacing, raw.header.get_zooms()[:3], rtol=1e-4)
    # Hounsfield units exactly as stored (no scaling, no clipping)
    np.testing.assert_array_equal(image, np.asarray(raw.dataobj, dtype=np.float32))
    assert image.min() < -1000  # real scanners pad below air: `normalize` has an optional clip


def test_default_chain_on_real_ct_and_back():
    image, geometry = read_image(SHARED_CT)
    chain = Chain.from_components(Recipe().preprocess, load_registry())
    out, trace = chain.forward(Volume(image, None, geometry.affine, str(SHARED_CT)))
    assert out.image.shape == (256, 256, geometry.shape[2] - 30)
    assert out.image.dtype == np.float32
    assert out.image.min() > -0.4 and out.image.max() < 1.4  # HU / 3071
    back = chain.invert(np.ones(out.image.shape, np.float32), trace, is_label=False)
    assert back.shape == geometry.shape
    canonical = nib.as_closest_canonical(nib.load(str(SHARED_CT)))
    inferior = np.asarray(canonical.dataobj).shape[2]
    assert back.shape[2] == inferior
    # the dropped slices are the 30 most inferior ones of the canonical scan
    zeros = np.flatnonzero(back.reshape(-1, back.shape[2]).max(axis=0) == 0)
    world_z = [(geometry.affine @ [0, 0, k, 1])[2] for k in zeros]
    kept_z = [(geometry.affine @ [0, 0, k, 1])[2] for k in range(back.shape[2]) if k not in zeros]
    assert len(zeros) == 30 and max(world_z) < min(kept_z)
