"""lungseg.data.volume.write_nifti: the one NIfTI writer (atomic; reference or new header)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.data.volume import write_mask, write_nifti

AFFINE = np.array(
    [[-0.7, 0, 0, 20.0], [0, -0.7, 0, 30.0], [0, 0, 2.5, -100.0], [0, 0, 0, 1]], dtype=np.float64
)


def _reference(path: Path) -> Path:
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), AFFINE)
    image.set_qform(AFFINE, code=2)
    image.set_sform(AFFINE, code=4)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"scanner X"
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, str(path))
    return path


def test_a_new_header_is_scanner_aligned_in_mm(tmp_path: Path) -> None:
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    out = write_nifti(tmp_path / "sub" / "x.nii.gz", data, affine=AFFINE)
    assert out == tmp_path / "sub" / "x.nii.gz"
    image = nib.load(str(out))
    assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
    assert image.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(image.header.get_zooms(), (0.7, 0.7, 2.5))
    np.testing.assert_allclose(image.affine, AFFINE)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(image.dataobj), data)
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.nii.gz"]


def test_a_reference_header_is_copied_without_its_scaling(tmp_path: Path) -> None:
    ref = _reference(tmp_path / "ref.nii.gz")
    probs = np.full((6, 5, 4), 0.25, np.float32)
    image = nib.load(str(write_nifti(tmp_path / "p.nii.gz", probs, reference=ref)))
    assert (int(image.header["qform_code"]), int(image.header["sform_code"])) == (2, 4)
    assert image.header.get_xyzt_units() == ("mm", "sec")
    assert image.header["descrip"].tobytes().startswith(b"scanner X")
    assert image.get_data_dtype() == np.float32
    np.testing.assert_allclose(image.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(image.dataobj), probs)  # no slope 2 / -1024
    mask = nib.load(str(write_mask(tmp_path / "m.nii.gz", probs > 0, ref)))
    assert mask.get_data_dtype() == np.uint8 and np.asarray(mask.dataobj).min() == 1


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_nifti(tmp_path / "x.nii.gz", np.ones((2, 2, 2), np.uint8), affine=AFFINE)
    before = path.read_bytes()

    def disk_full(image: object, file_map: dict, *args: object, **kwargs: object) -> None:
        file_map["image"].fileobj.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_nifti(path, np.zeros((2, 2, 2), np.uint8), affine=AFFINE)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]
    with pytest.raises(ValueError, match="affine or a reference"):
        write_nifti(tmp_path / "y.nii.gz", np.ones((2, 2, 2), np.uint8))
