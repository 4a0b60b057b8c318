"""``predict --engine onnx``: a network from ``lungseg export`` run by onnxruntime.

The ONNX model carries its model card (:mod:`lungseg.inference.model_card`), whose recipe
gives the preprocessing chain, the slice context, the threshold and the post-processing.
:class:`OnnxNetwork` puts the onnxruntime session behind the interface of a PyTorch network
(a module mapping an image batch to logits), so the one
:class:`~lungseg.inference.predictor.Predictor` runs it: the same chain, flip TTA, inverse
chain, threshold and post-processors as a checkpoint. Several ONNX files predict as one
:class:`~lungseg.inference.ensemble.Ensemble` (mean probability).

onnxruntime (the ``lungseg[onnx]`` extra) is imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lungseg.core.errors import CheckpointError, LungsegError, RecipeError
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.inference.model_card import card_from_metadata
from lungseg.inference.predictor import Predictor

__all__ = ["OnnxNetwork", "load_onnx_predictor", "onnx_session", "require_onnxruntime"]


def require_onnxruntime() -> Any:
    """Import onnxruntime, or fail with one line naming the extra to install.

    Raises:
        RecipeError: onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError:
        raise RecipeError("--engine onnx needs onnxruntime: pip install 'lungseg[onnx]'") from None
    return onnxruntime


def _providers(device: str | None) -> tuple[list[Any], str]:
    """onnxruntime execution providers for ``device`` (``None``/``cpu``: CPU; ``cuda[:N]``).

    Raises:
        RecipeError: a device other than cpu/cuda, or CUDA asked for and onnxruntime has no
            CUDA provider here.
    """
    ort = require_onnxruntime()
    name = (device or "cpu").lower()
    if name == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise RecipeError(f"--device {device}: with --engine onnx choose cpu, cuda or cuda:N")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RecipeError(
            f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu "
            "for a CUDA build), or use --device cpu"
        )
    cuda = ("CUDAExecutionProvider", {"device_id": int(index or 0)})
    return [cuda, "CPUExecutionProvider"], name


def onnx_session(path: str | os.PathLike, device: str | None = None) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime session for a lungseg ONNX export, and its model card.

    Raises:
        CheckpointError: missing file, not an ONNX model, or an ONNX model without a
            lungseg card.
        RecipeError: onnxruntime missing, or a device it cannot use.
    """
    ort = require_onnxruntime()
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path}: a folder; --engine onnx takes .onnx files written by `lungseg export`"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    with open(path, "rb") as handle:
        if handle.read(4) == b"PK\x03\x04":  # a zip: torch.save's format
            raise CheckpointError(
                f"{path}: a PyTorch file, not an ONNX model; predict it with --engine torch, "
                f"or export it first: lungseg export --checkpoint {path} --format onnx --out "
                "MODEL.onnx"
            )
    providers, _ = _providers(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: lungseg reports what matters itself
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a usable ONNX model ({first})") from None
    card = card_from_metadata(session.get_modelmeta().custom_metadata_map, path)
    return session, card


class OnnxNetwork(nn.Module):
    """An onnxruntime session as a network: ``(N, C, H, W)`` tensor in, logits tensor out.

    It holds no parameters: ``to()`` and ``eval()`` change nothing, and the session runs on
    the device it was made for. Inputs are copied to the host as float32 and the logits come
    back on the input's device.
    """

    def __init__(self, session: Any, source: str = "<onnx>") -> None:
        super().__init__()
        self.session = session
        self.source = source
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            (logits, *_) = self.session.run(None, {self.input_name: batch})
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"{self.source}: onnxruntime failed on a batch of shape {tuple(batch.shape)} "
                f"({first})"
            ) from None
        return torch.from_numpy(logits).to(x.device)


def _member(path: Path, device: str | None) -> tuple[OnnxNetwork, Recipe, dict[str, Any]]:
    """One ONNX file as a network, with the recipe and card it carries."""
    session, card = onnx_session(path, device)
    try:
        recipe = recipe_from_dict(card.get("recipe"), source=f"{path} (embedded recipe)")
    except LungsegError as exc:
        raise CheckpointError(f"{path}: its embedded recipe is unusable: {exc}") from None
    channels = 2 * recipe.data.context + 1
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or shape[1] != channels:
        raise CheckpointError(
            f"{path}: takes input of shape {shape}, but its recipe (data.context: "
            f"{recipe.data.context}) gives {channels} channels; export the checkpoint again"
        )
    return OnnxNetwork(session, str(path)), recipe, card


def load_onnx_predictor(
    paths: Sequence[str | os.PathLike], *, device: str | None = None, **settings: Any
) -> tuple[Predictor, Recipe]:
    """The predictor of one ONNX export, or of the ensemble of several (mean probability).

    Args:
        paths: ``.onnx`` files written by ``lungseg export``.
        device: ``cpu`` (the default) or ``cuda[:N]``: where onnxruntime runs the network.
        **settings: ``threshold``, ``batch_size``, ``tta``, ``postprocessors``, as
            :meth:`Predictor.from_recipe` takes them; unset ones come from the first
            file's embedded recipe.

    Returns:
        The predictor, and the first file's embedded recipe.

    Raises:
        CheckpointError: a missing or foreign file, or members made with different
            preprocessing chains or ``data.context``.
        RecipeError: onnxruntime missing, an unusable device, or an unknown postprocessor.
    """
    from lungseg.inference.ensemble import Ensemble, check_same_inputs

    if not paths:
        raise CheckpointError("--checkpoint: name at least one .onnx file")
    members = [_member(Path(p), device) for p in paths]
    recipe = check_same_inputs(paths, [m[1] for m in members])
    network = members[0][0] if len(members) == 1 else Ensemble([m[0] for m in members])
    return Predictor.from_recipe(network, recipe, device="cpu", **settings)
