"""``lungseg export``: ONNX and TorchScript files with their card, and their safety rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lungseg.core.errors import CheckpointError, OutputError, RecipeError
from lungseg.inference.export import export
from lungseg.training.checkpoint import load_checkpoint


def _slices(channels: int, n: int = 5, size: int = 32) -> np.ndarray:
    return np.random.default_rng(3).normal(0, 0.3, (n, channels, size, size)).astype(np.float32)


def _torch_logits(best: Path, batch: np.ndarray) -> np.ndarray:
    module, _ = load_checkpoint(best)
    with torch.no_grad():
        return module.model.eval()(torch.from_numpy(batch)).numpy()


@pytest.mark.slow
def test_onnx_export_is_valid_has_a_free_batch_axis_and_matches_pytorch(tiny_onnx, tiny_trained):
    _, best = tiny_trained
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model, full_check=True)
    (image,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 32, 32]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        batch = _slices(1, n)
        (logits,) = session.run(["logits"], {"image": batch})
        assert logits.shape == (n, 1, 32, 32)
        np.testing.assert_allclose(logits, _torch_logits(best, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_the_card_is_in_the_metadata_and_beside_the_model(tiny_onnx, tiny_trained):
    _, best = tiny_trained
    _, recipe = load_checkpoint(best)  # the stored recipe: every chain parameter written out
    meta = ort.InferenceSession(str(tiny_onnx)).get_modelmeta().custom_metadata_map
    card = {key: json.loads(value) for key, value in meta.items()}
    assert card == json.loads(tiny_onnx.with_name("tiny.onnx.json").read_text())
    from lungseg import __version__

    assert card["lungseg_version"] == __version__ and card["format"] == "onnx"
    assert card["preprocess"] == recipe.preprocess_dict()
    assert card["preprocess"][2] == {"name": "normalize", "divisor": 3071.0, "clip": None}
    assert card["preprocess"][-1] == {"name": "resize", "size": 32}
    assert card["context"] == 0 and card["input_size"] == [32, 32]
    assert card["threshold"] == recipe.evaluate.threshold
    assert card["input"]["shape"] == ["N", 1, 32, 32]
    assert "sigmoid" in card["output"]["meaning"]
    assert card["recipe"] == recipe.to_dict(secrets=False)
    assert card["checkpoint"]["file"] == best.name


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_with_torch_jit_and_gives_the_same_logits(tiny_trained, tmp_path):
    _, best = tiny_trained
    out = tmp_path / "tiny.pt"
    written = export(best, "torchscript", out)
    assert written == [out, tmp_path / "tiny.pt.json"]
    extra = {"lungseg.json": ""}
    loaded = torch.jit.load(str(out), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["lungseg.json"]) == json.loads(written[1].read_text())
    batch = _slices(1, 6)
    with torch.no_grad():
        got = loaded(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(got, _torch_logits(best, batch), atol=1e-6)


@pytest.mark.slow
def test_the_embedded_recipe_holds_no_credentials(tiny_trained, tmp_path):
    _, best = tiny_trained
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    options = {"key": "AKIAEXPORTSECRET", "client_kwargs": {"endpoint_url": "http://minio:9000"}}
    ckpt["lungseg"]["recipe"]["store"]["storage_options"] = options
    secret = tmp_path / "secret.ckpt"
    torch.save(ckpt, secret)
    model, card = export(secret, "onnx", tmp_path / "m.onnx")
    for path in (model, card):
        assert b"AKIAEXPORTSECRET" not in path.read_bytes()
    kept = json.loads(card.read_text())["recipe"]["store"]["storage_options"]
    assert kept == {"client_kwargs": {"endpoint_url": "http://minio:9000"}}


@pytest.mark.slow
def test_existing_outputs_are_replaced_only_with_overwrite_and_only_when_lungseg_wrote_them(
    tiny_onnx, tiny_trained, tmp_path
):
    _, best = tiny_trained
    out = tmp_path / tiny_onnx.name
    out.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(OutputError, match=rf"output {out} exists; pass --overwrite"):
        export(best, "onnx", out)
    assert export(best, "onnx", out, overwrite=True) == [out, tmp_path / "tiny.onnx.json"]
    onnx.checker.check_model(str(out))
    mine = tmp_path / "notes.onnx"
    mine.write_text("my own notes")
    with pytest.raises(OutputError, match="lungseg did not export it"):
        export(best, "torchscript", mine, overwrite=True)
    assert mine.read_text() == "my own notes"
    (tmp_path / "other.pt.json").write_text('{"mine": 1}')  # a card name lungseg did not write
    with pytest.raises(OutputError, match="other.pt.json: exists and lungseg did not export"):
        export(best, "torchscript", tmp_path / "other.pt", overwrite=True)
    assert not (tmp_path / "other.pt").exists()
    before = best.read_bytes()
    with pytest.raises(OutputError, match="is the checkpoint itself"):
        export(best, "onnx", best, overwrite=True)
    assert best.read_bytes() == before
    # --out checkpoints/best would put the card on the checkpoint's own best.json
    run = tmp_path / "checkpoints"
    run.mkdir()
    for name in ("best.ckpt", "best.json"):
        (run / name).write_bytes((best.parent / name).read_bytes())
    with pytest.raises(OutputError, match="best.json: exists and lungseg did not export it"):
        export(run / "best.ckpt", "onnx", run / "best", overwrite=True)
    assert (run / "best.json").read_bytes() == (best.parent / "best.json").read_bytes()
    assert sorted(p.name for p in run.iterdir()) == ["best.ckpt", "best.json"]


def test_bad_requests_fail_with_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="--format tflite: choose one of onnx, torchscript"):
        export(tmp_path / "c.ckpt", "tflite", tmp_path / "m")
    with pytest.raises(CheckpointError, match="c.ckpt: checkpoint not found"):
        export(tmp_path / "c.ckpt", "torchscript", tmp_path / "m.pt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a lungseg checkpoint"):
        export(tmp_path / "text.ckpt", "torchscript", tmp_path / "m.pt")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(RecipeError, match=r"needs onnxscript: pip install 'lungseg\[onnx\]'"):
        export(tmp_path / "c.ckpt", "onnx", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.ckpt"]


@pytest.mark.slow
def test_cli_export_writes_the_model_and_refuses_a_second_time(tiny_trained, tmp_path):
    _, best = tiny_trained
    out = tmp_path / "cli.onnx"
    argv = [sys.executable, "-m", "lungseg", "export", "--checkpoint", str(best)]
    argv += ["--format", "onnx", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and f"{out}.json" in done.stdout
    onnx.checker.check_model(str(out))
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert "exists; pass --overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exported_files_get_the_permissions_of_the_users_umask(tiny_trained, tmp_path):
    """Written through a temporary file, yet readable by others as any new file is."""
    import os
    import stat

    _, best = tiny_trained
    old = os.umask(0o022)
    try:
        written = export(best, "torchscript", tmp_path / "shared.pt")
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
