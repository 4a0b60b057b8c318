"""docs/export.md: its script runs an ONNX export without lungseg and gives lungseg's mask."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.inference.export import export
from lungseg.inference.predict import predict

from .test_ensemble import _altered

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
NO_LUNGSEG = "import sys\nsys.modules['lungseg'] = None  # the script must not need lungseg\n"


def doc_script() -> str:
    """The page's one ``python`` code block."""
    (block,) = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)
    return block


@pytest.mark.slow
def test_the_documented_script_gives_the_mask_of_lungseg_predict(
    tiny_trained, tiny_dataset, tmp_path
):
    scan = tmp_path / "scan.nii.gz"  # not square, upside down and mirrored (not RAS)
    source = nib.load(str(tiny_dataset / "imagesTs" / "lung_006.nii.gz"))
    x, _, z = source.shape
    index = np.array([[-1.0, 0, 0, x - 1], [0, 1, 0, 3], [0, 0, -1, z - 1], [0, 0, 0, 1]])
    data = np.asarray(source.dataobj)[::-1, 3:, ::-1].copy()  # voxel (i, j, k) -> index @ it
    nib.save(nib.Nifti1Image(data, source.affine @ index, source.header), str(scan))
    _, best = tiny_trained  # barely trained: its threshold is set so that the mask is not empty
    probs = predict(best, [scan], tmp_path / "probs", prob=True).extra[0]
    threshold = float(np.quantile(np.asarray(nib.load(str(probs)).dataobj), 0.995))
    ckpt = _altered(best, tmp_path / "best.ckpt", evaluate={"threshold": threshold})
    model, _ = export(ckpt, "onnx", tmp_path / "model.onnx")
    script = tmp_path / "run_onnx.py"
    script.write_text(NO_LUNGSEG + doc_script())
    mask = tmp_path / "mask.nii.gz"
    done = subprocess.run(
        [sys.executable, str(script), str(model), str(scan), str(mask)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{mask}: ") and f"(threshold {threshold})" in done.stdout
    report = predict(model, [scan], tmp_path / "lungseg", engine="onnx")
    assert not report.failed, report.failed
    expected = np.asarray(nib.load(str(report.written[0])).dataobj)
    got = nib.load(str(mask))
    np.testing.assert_array_equal(got.affine, nib.load(str(scan)).affine)
    np.testing.assert_array_equal(np.asarray(got.dataobj), expected)
    assert expected.any() and not expected.all()
