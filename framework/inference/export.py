"""``lungseg export``: a checkpoint's network as ONNX or TorchScript, with its model card.

The network maps ``(N, 2 * context + 1, H, W)`` float32 slices to ``(N, 1, H, W)`` logits;
the batch axis ``N`` is free, ``H, W`` are the chain's slice size. Beside the model,
``<file>.json`` holds its card (:mod:`lungseg.inference.model_card`: preprocessing chain,
context, slice size, threshold, output meaning, the recipe without credentials, the lungseg
version); ONNX models carry it in ``metadata_props`` too, TorchScript archives as the extra
file ``lungseg.json``.

ONNX goes through PyTorch's ``torch.export``-based exporter (onnxscript) and is checked
before it is put in place: ``onnx.checker``, then onnxruntime's logits against PyTorch's on
a batch of another size than the one exported with. Files are written to a temporary name
and renamed, so ``out`` never holds half a model.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lungseg.core.console import log
from lungseg.core.errors import CheckpointError, OutputError, RecipeError
from lungseg.inference.model_card import (
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    TORCHSCRIPT_CARD,
    is_lungseg_export,
    model_card,
    sidecar,
)

__all__ = ["FORMATS", "export"]

OPSET = 18
"""The ONNX opset written (onnxruntime runs it from version 1.14)."""
ATOL = 1e-4
"""Largest difference (relative to the logits' scale) allowed between exported and PyTorch."""


def export(
    checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *, overwrite: bool = False
) -> list[Path]:
    """Export a checkpoint's network to ``out`` with its model card beside it.

    Args:
        checkpoint: a lungseg ``.ckpt`` (loaded with ``weights_only``: no pickled code runs).
        fmt: ``onnx`` or ``torchscript``.
        out: the model file to write; the card goes to ``<out>.json``.
        overwrite: replace files an earlier ``lungseg export`` wrote (never other files).

    Returns:
        The files written: the model, then its card.

    Raises:
        RecipeError: an unknown format, or the ``onnx`` extra missing.
        CheckpointError: a missing, unsafe or unreadable checkpoint, a chain without a fixed
            slice size, or an export that does not reproduce PyTorch's logits.
        OutputError: ``out`` is the checkpoint or a folder, or an output exists and
            ``overwrite`` is false or lungseg did not write it.
    """
    if fmt not in FORMATS:
        raise RecipeError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()
    checkpoint, out = Path(checkpoint), Path(out).expanduser()
    card_path = sidecar(out)
    _refuse_outputs(checkpoint, [out, card_path], overwrite)

    from lungseg.training.checkpoint import load_checkpoint, read_checkpoint

    module, recipe = load_checkpoint(checkpoint)
    info = read_checkpoint(checkpoint, mmap=True).get("lungseg", {})
    card = model_card(recipe, info, fmt, checkpoint)
    network = module.model.float().eval()
    example = _example(card["input"]["shape"], batch=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    write = _write_onnx if fmt == "onnx" else _write_torchscript
    _atomic(out, lambda tmp: write(network, example, card, tmp))
    _atomic(card_path, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n", "utf-8"))
    log.info("exported %s (%s) to %s", checkpoint, fmt, out)
    return [out, card_path]


def _require_onnx() -> None:
    """Fail with one line naming the extra when onnx, onnxscript or onnxruntime is missing."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise RecipeError(f"--format onnx needs {name}: pip install 'lungseg[onnx]'") from None


def _refuse_outputs(checkpoint: Path, outputs: list[Path], overwrite: bool) -> None:
    """Refuse outputs on the checkpoint, on folders, or on files lungseg did not export.

    Raises:
        OutputError: naming the file and the fix.
    """
    for path in outputs:
        if path.exists() and checkpoint.exists() and path.resolve() == checkpoint.resolve():
            raise OutputError(
                f"--out {path}: is the checkpoint itself; name a new file for the export"
            )
        if path.is_dir():
            raise OutputError(f"--out {path}: is a folder; name the file to write")
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"output {existing[0]} exists; pass --overwrite to replace it, or write elsewhere"
        )
    for path in existing:
        if not is_lungseg_export(path):
            raise OutputError(
                f"--out {path}: exists and lungseg did not export it; lungseg never replaces "
                "files it did not make: name another file"
            )


def _example(shape: list[Any], batch: int) -> torch.Tensor:
    """A reproducible input batch in the range of normalised CT slices."""
    _, channels, height, width = shape
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 0.3, (batch, channels, height, width)).astype(np.float32)
    return torch.from_numpy(values)


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would have made it, not 0600
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reference(network: nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return network(batch).float().numpy()


def _check_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Raise :class:`CheckpointError` unless ``got`` matches PyTorch's logits ``want``."""
    scale = max(1.0, float(np.abs(want).max()))
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= ATOL * scale:
        raise CheckpointError(
            f"the {what} export does not reproduce PyTorch's logits (largest difference "
            f"{diff:.3g}, shapes {got.shape} vs {want.shape}); the network uses an operation "
            "the exporter does not translate faithfully"
        )


def _write_onnx(network: nn.Module, example: torch.Tensor, card: dict, path: Path) -> None:
    """Export to ONNX (dynamic batch axis), embed the card, check it and compare logits."""
    import onnx
    import onnxruntime as ort

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter; the result is checked below
        try:
            program = torch.onnx.export(
                network,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"the network cannot be exported to ONNX: {first}") from None
    model = program.model_proto
    for key, value in card.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise CheckpointError(f"the ONNX export fails onnx.checker: {exc}") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = _example(card["input"]["shape"], batch=3)  # another batch size than exported
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: other.numpy()})
    _check_close(got, _reference(network, other), "ONNX")


def _write_torchscript(network: nn.Module, example: torch.Tensor, card: dict, path: Path) -> None:
    """Trace to TorchScript with the card as an extra file; reload it and compare logits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notes
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(network, example)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_CARD: json.dumps(card)})
        loaded = torch.jit.load(str(path), map_location="cpu")
    other = _example(card["input"]["shape"], batch=3)
    with torch.no_grad():
        got = loaded(other).float().numpy()
    _check_close(got, _reference(network, other), "TorchScript")
