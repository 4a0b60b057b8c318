"""What an exported network carries about itself: the model card of ``lungseg export``.

An exported network is only useful with the numbers around it: the preprocessing chain that
makes its input slices, how many neighbouring slices go in as channels (``data.context``),
the slice size, what its output means and the threshold. :func:`model_card` gathers them
from a checkpoint's recipe; ``lungseg export`` writes the card as JSON beside the model
(``<file>.json``), inside an ONNX model's ``metadata_props`` (one entry per top-level key, each
value JSON-encoded) and inside a TorchScript archive (``extra/lungseg.json``).
``lungseg predict --engine onnx`` rebuilds the chain from the card's ``recipe``.

The card holds the recipe without credentials (``Recipe.to_dict(secrets=False)``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from lungseg.core.errors import CheckpointError
from lungseg.core.recipe import Recipe

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "MARK",
    "OUTPUT_NAME",
    "card_from_metadata",
    "input_size",
    "is_card",
    "is_lungseg_export",
    "model_card",
    "sidecar",
]

MARK = "lungseg_version"
"""The card key every lungseg export has (the lungseg version that wrote it)."""
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
FORMATS = ("onnx", "torchscript")
"""What ``lungseg export --format`` writes."""
TORCHSCRIPT_CARD = "lungseg.json"
"""The card's name among a TorchScript archive's extra files."""


def sidecar(out: Path) -> Path:
    """The card written beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    return out.with_name(out.name + ".json")


def input_size(recipe: Recipe) -> tuple[int, int]:
    """The in-plane size ``(H, W)`` of the chain's slices: the last step's ``size`` parameter.

    ``resize`` (``size: 256``) and ``resample`` (``size: 256`` or ``[x, y]``) fix it; ``H``
    runs along x and ``W`` along y of the canonical grid.

    Raises:
        CheckpointError: no step of the chain fixes the slice size.
    """
    for step in reversed(recipe.preprocess):
        size = step.params.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            return size, size
        if isinstance(size, list | tuple) and len(size) == 2:
            return int(size[0]), int(size[1])
    raise CheckpointError(
        f"cannot tell the slice size the network takes: no step of the chain "
        f"({[c.name for c in recipe.preprocess]}) sets `size`; export needs a chain ending in "
        "a fixed size (resize or resample)"
    )


def model_card(recipe: Recipe, info: dict[str, Any], fmt: str, checkpoint: Path) -> dict[str, Any]:
    """The card of a network exported from a checkpoint.

    Args:
        recipe: the checkpoint's recipe (its chain resolved, every parameter written out).
        info: the checkpoint's ``lungseg`` entry (``epoch``, ``val_dice``...).
        fmt: ``onnx`` or ``torchscript``.
        checkpoint: the checkpoint file, recorded by name.

    Returns:
        JSON-ready data; ``MARK`` is the lungseg version.
    """
    from lungseg import __version__

    context = recipe.data.context
    height, width = input_size(recipe)
    channels = 2 * context + 1
    return {
        MARK: __version__,
        "format": fmt,
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", channels, height, width],
            "dtype": "float32",
            "meaning": (
                f"N preprocessed axial slices, each with the {context} slices on either side "
                "as channels (centre slice in the middle channel, first and last slices "
                "repeated past the ends)"
            ),
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["N", 1, height, width],
            "dtype": "float32",
            "meaning": "logits: tumour probability = sigmoid(logits); tumour where "
            "probability >= threshold",
        },
        "input_size": [height, width],
        "context": context,
        "threshold": recipe.evaluate.threshold,
        "tta": recipe.evaluate.tta,
        "postprocess": [c.to_dict() for c in recipe.evaluate.postprocess],
        "preprocess": recipe.preprocess_dict(),
        "preprocess_hash": recipe.preprocess_hash(),
        "recipe": recipe.to_dict(secrets=False),
        "checkpoint": {
            "file": checkpoint.name,
            "epoch": info.get("epoch"),
            "val_dice": info.get("val_dice"),
            "trained_with": info.get("version"),
        },
    }


def card_from_metadata(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """The card of an ONNX model from its ``metadata_props`` (key -> JSON text).

    Raises:
        CheckpointError: the model has no lungseg card, or an unreadable one.
    """
    if MARK not in metadata:
        raise CheckpointError(
            f"{path}: an ONNX model without lungseg metadata (made by another tool); export "
            "a lungseg checkpoint with `lungseg export --format onnx`"
        )
    try:
        return {key: json.loads(value) for key, value in metadata.items()}
    except ValueError as exc:
        raise CheckpointError(f"{path}: its lungseg metadata is unreadable ({exc})") from None


def is_card(card: Any) -> bool:
    """Whether ``card`` is an export's model card (a checkpoint's JSON sidecar is not)."""
    return isinstance(card, dict) and MARK in card and card.get("format") in FORMATS


def is_lungseg_export(path: Path) -> bool:
    """Whether ``path`` is a file ``lungseg export`` wrote (a model or its card)."""
    try:
        if zipfile.is_zipfile(path):  # TorchScript
            with zipfile.ZipFile(path) as archive:
                return any(n.endswith(f"/extra/{TORCHSCRIPT_CARD}") for n in archive.namelist())
        if path.name.endswith(".json"):
            return is_card(json.loads(path.read_text(encoding="utf-8")))
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return is_card({prop.key: json.loads(prop.value) for prop in model.metadata_props})
    except Exception:
        return False
