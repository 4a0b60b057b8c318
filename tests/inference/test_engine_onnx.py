"""``predict --engine onnx``: an exported model predicts as its checkpoint does, through files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lungseg.core.build import assemble
from lungseg.core.errors import CheckpointError, RecipeError
from lungseg.core.recipe import recipe_from_dict
from lungseg.inference.export import export
from lungseg.inference.predict import predict

from .test_ensemble import _altered


@pytest.fixture(scope="module")
def scan(tiny_dataset, tmp_path_factory) -> Path:
    """A synthetic scan written with nibabel, stored left-right mirrored (an LAS affine)."""
    source = nib.load(str(tiny_dataset / "imagesTs" / "lung_006.nii.gz"))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = source.shape[0] - 1
    image = nib.Nifti1Image(
        np.asarray(source.dataobj)[::-1].copy(), source.affine @ flip, source.header
    )
    path = tmp_path_factory.mktemp("scan") / "mirrored.nii.gz"
    nib.save(image, str(path))
    return path


def _outputs(report) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    assert not report.failed, report.failed
    mask = nib.load(str(report.written[0]))
    probs = np.asarray(nib.load(str(report.extra[0])).dataobj)
    return np.asarray(mask.dataobj), probs, mask


@pytest.mark.slow
@pytest.mark.parametrize("tta", [False, True])
def test_onnx_engine_predicts_the_checkpoints_probabilities_and_masks(
    tiny_trained, tiny_onnx, scan, tmp_path, tta
):
    _, best = tiny_trained
    settings = {"prob": True, "tta": tta}
    ref_mask, ref_probs, ref = _outputs(predict(best, [scan], tmp_path / "torch", **settings))
    threshold = float(np.quantile(ref_probs, 0.995))  # a mask of some hundred voxels
    ref_mask, ref_probs, ref = _outputs(
        predict(best, [scan], tmp_path / "torch", threshold=threshold, overwrite=True, **settings)
    )
    report = predict(
        tiny_onnx, [scan], tmp_path / "onnx", threshold=threshold, engine="onnx", **settings
    )
    mask, probs, written = _outputs(report)
    assert written.shape == nib.load(str(scan)).shape
    np.testing.assert_array_equal(written.affine, ref.affine)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    assert ref_mask.any() and (ref_mask == 0).any()
    np.testing.assert_array_equal(mask, ref_mask)


@pytest.mark.slow
def test_a_network_with_slice_context_predicts_alike_through_onnx(tiny_trained, scan, tmp_path):
    _, best = tiny_trained
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    ckpt["lungseg"]["recipe"]["data"]["context"] = 1  # three slices in: new, untrained weights
    torch.manual_seed(0)
    module = assemble(recipe_from_dict(ckpt["lungseg"]["recipe"])).module()
    ckpt["state_dict"] = module.state_dict()
    source = tmp_path / "context.ckpt"
    torch.save(ckpt, source)
    model, card = export(source, "onnx", tmp_path / "context.onnx")
    assert json.loads(card.read_text())["input"]["shape"] == ["N", 3, 32, 32]
    _, ref_probs, _ = _outputs(predict(source, [scan], tmp_path / "first", prob=True))
    threshold = float(np.quantile(ref_probs, 0.99))
    runs = {}
    for engine, path in (("torch", source), ("onnx", model)):
        out = tmp_path / engine
        report = predict(path, [scan], out, prob=True, threshold=threshold, engine=engine)
        runs[engine] = _outputs(report)[:2]
    np.testing.assert_allclose(runs["onnx"][1], runs["torch"][1], atol=1e-4)
    assert runs["torch"][0].any()
    np.testing.assert_array_equal(runs["onnx"][0], runs["torch"][0])


@pytest.mark.slow
def test_onnx_engine_uses_the_embedded_recipes_settings(tiny_trained, tiny_onnx, scan, tmp_path):
    _, best = tiny_trained
    torch_mask, _, _ = _outputs(predict(best, [scan], tmp_path / "t", prob=True))
    onnx_mask, _, _ = _outputs(predict(tiny_onnx, [scan], tmp_path / "o", prob=True, engine="onnx"))
    np.testing.assert_array_equal(onnx_mask, torch_mask)  # the recipe's threshold, no TTA


@pytest.mark.slow
def test_several_onnx_files_average_like_the_checkpoint_ensemble(
    tiny_trained, tiny_onnx, scan, tmp_path
):
    _, best = tiny_trained
    other = _altered(best, tmp_path / "b" / "best.ckpt", noise=0.05)
    (other_onnx, _) = export(other, "onnx", tmp_path / "b.onnx")
    ckpts = predict([best, other], [scan], tmp_path / "torch", prob=True)
    onnxs = predict([tiny_onnx, other_onnx], [scan], tmp_path / "onnx", prob=True, engine="onnx")
    _, ref_probs, _ = _outputs(ckpts)
    _, probs, _ = _outputs(onnxs)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    _, alone, _ = _outputs(predict(tiny_onnx, [scan], tmp_path / "one", prob=True, engine="onnx"))
    assert not np.allclose(probs, alone, atol=1e-3)  # the second member counts


@pytest.mark.slow
def test_onnx_members_with_another_chain_are_refused(tiny_trained, tiny_onnx, scan, tmp_path):
    recipe, best = tiny_trained
    chain = [dict(step) for step in recipe.preprocess_dict()]
    chain[-1]["size"] = 16
    other = _altered(best, tmp_path / "b" / "best.ckpt", preprocess=chain)
    (other_onnx, _) = export(other, "onnx", tmp_path / "b.onnx")
    with pytest.raises(CheckpointError, match="different preprocessing chains"):
        predict([tiny_onnx, other_onnx], [scan], tmp_path / "o", engine="onnx")
    assert not (tmp_path / "o").exists()


def test_files_that_are_not_lungseg_onnx_exports_are_refused(tiny_dataset, tmp_path):
    scan = tiny_dataset / "imagesTs" / "lung_006.nii.gz"
    foreign = tmp_path / "foreign.onnx"
    conv = nn.Conv2d(1, 1, 3, padding=1).eval()
    torch.onnx.export(conv, (torch.zeros(1, 1, 8, 8),), str(foreign))
    ort.InferenceSession(str(foreign))  # a valid ONNX model, just not lungseg's
    (tmp_path / "text.onnx").write_text("not a model")
    torch.save({"state_dict": {}}, tmp_path / "best.ckpt")
    cases = [
        (foreign, "an ONNX model without lungseg metadata"),
        (tmp_path / "text.onnx", "not a usable ONNX model"),
        (tmp_path / "best.ckpt", "a PyTorch file, not an ONNX model; predict it with --engine"),
        (tmp_path / "missing.onnx", "missing.onnx: ONNX model not found"),
        (tmp_path, "a folder; --engine onnx takes .onnx files"),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            predict(path, [scan], tmp_path / "out", engine="onnx")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present"
)
@pytest.mark.slow
def test_asking_for_cuda_without_a_cuda_onnxruntime_names_the_fix(tiny_onnx, scan, tmp_path):
    with pytest.raises(RecipeError, match="no CUDA provider .*onnxruntime-gpu"):
        predict(tiny_onnx, [scan], tmp_path / "o", engine="onnx", device="cuda")


@pytest.mark.slow
def test_cli_predict_with_engine_onnx_writes_the_checkpoints_mask(
    tiny_trained, tiny_onnx, scan, tmp_path
):
    _, best = tiny_trained
    ref_mask, _, _ = _outputs(predict(best, [scan], tmp_path / "torch", prob=True))
    argv = [sys.executable, "-m", "lungseg", "predict", str(scan), "--checkpoint", str(tiny_onnx)]
    argv += ["--engine", "onnx", "--out", str(tmp_path / "cli")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = np.asarray(nib.load(str(tmp_path / "cli" / scan.name)).dataobj)
    np.testing.assert_array_equal(written, ref_mask)
