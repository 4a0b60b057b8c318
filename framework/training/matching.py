"""Does a checkpoint fit a recipe? The chain, the context and the network must be the same."""

from __future__ import annotations

import json
import os
from typing import Any

from lungseg.core.build import model_channels, registry
from lungseg.core.errors import CheckpointError, LungsegError
from lungseg.core.recipe import Recipe

__all__ = ["check_matches"]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _model_params(recipe: Recipe) -> dict[str, Any]:
    """The model's parameters with the plugin's defaults filled in (when it is installed)."""
    params = dict(recipe.model.params)
    try:
        entry = registry().get("model", recipe.model.name)
        params.update(model_channels(recipe, registry()))  # in_channels follows data.context
    except LungsegError:
        return _plain(params)
    for name, param in entry.parameters().items():
        if param.default is not param.empty:
            params.setdefault(name, param.default)
    return _plain(params)


def _differences(stored: Recipe, current: Recipe) -> list[tuple[str, Any, Any]]:
    diffs: list[tuple[str, Any, Any]] = []
    if stored.preprocess_hash() != current.preprocess_hash():
        a, b = stored.preprocess_dict(), current.preprocess_dict()
        if len(a) != len(b):
            diffs.append(("preprocess", f"{len(a)} steps", f"{len(b)} steps"))
        else:
            for i, (sa, sb) in enumerate(zip(a, b, strict=True)):
                for key in sorted(set(sa) | set(sb), key=lambda k: (k != "name", k)):
                    if sa.get(key) != sb.get(key):
                        diffs.append((f"preprocess[{i}].{key}", sa.get(key), sb.get(key)))
        if not diffs:
            diffs.append(("preprocess", stored.preprocess_hash(), current.preprocess_hash()))
    if stored.data.context != current.data.context:
        diffs.append(("data.context", stored.data.context, current.data.context))
    if stored.model.name != current.model.name:
        diffs.append(("model.name", stored.model.name, current.model.name))
    else:
        a, b = _model_params(stored), _model_params(current)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append((f"model.{key}", a.get(key), b.get(key)))
    return diffs


def check_matches(
    path: str | os.PathLike, stored: Recipe, current: Recipe, *, fix: str | None = None
) -> None:
    """Refuse a checkpoint trained with another preprocessing chain or model than ``current``.

    Compared: the preprocessing chain (``Recipe.preprocess_hash()``), the 2.5D context
    (``data.context``: the network's input channels) and the model component (name, and
    parameters with the plugin's defaults filled in). Everything else (loss, optimiser,
    epochs, evaluation settings) may differ.

    Args:
        path: the checkpoint, for the message.
        stored: the recipe stored in the checkpoint
            (:func:`~lungseg.training.checkpoint.load_checkpoint`).
        current: the recipe of the command being run.
        fix: how to resolve it, appended to the message (a default names both ways out).

    Raises:
        CheckpointError: ``{path}: trained with another <key> than <recipe file> (checkpoint
            X, recipe Y; N more differences); <fix>``.
    """
    diffs = _differences(stored, current)
    if not diffs:
        return
    key, was, now = diffs[0]
    more = f"; {len(diffs) - 1} more difference{'s' if len(diffs) > 2 else ''}" if diffs[1:] else ""
    fix = fix or (
        "use the recipe the checkpoint was trained with (it is stored inside it and in the run "
        "folder's recipe.yaml), or a checkpoint trained with this recipe"
    )
    raise CheckpointError(
        f"{path}: trained with another {key} than {current.source_file} "
        f"(checkpoint {was!r}, recipe {now!r}{more}); {fix}"
    )
