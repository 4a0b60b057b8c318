"""The experiment-tracker settings of a recipe's ``trainer`` section: MLflow and W&B.

``trainer.loggers`` picks the trackers (``mlflow`` needs ``pip install 'lungseg[mlflow]'``,
``wandb`` needs ``'lungseg[wandb]'``); these sections say where their runs go. Each default
follows the tracker's own environment variables first, so a cluster's settings apply
unchanged; :mod:`lungseg.training.trackers` builds the loggers.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lungseg.core.errors import RecipeError
from lungseg.core.recipe_schema import require

if TYPE_CHECKING:
    from lungseg.core.recipe import Recipe

__all__ = ["TRACKERS", "MlflowConfig", "WandbConfig", "WandbMode", "check_trackers"]

WandbMode = Literal["online", "offline", "disabled"]
"""``trainer.wandb.mode``: W&B's own run modes."""


def _not_blank(value: str | None, key: str) -> None:
    require(value is None or bool(value.strip()), key, "a non-empty string or null", value)


@dataclass
class MlflowConfig:
    """``trainer.mlflow``: the MLflow run of ``trainer.loggers: [mlflow]``.

    Attributes:
        tracking_uri: the tracking server or store (``http://host:5000``, ``databricks``,
            ``file:/path``); null: ``MLFLOW_TRACKING_URI``, else a local file store in
            ``<output>/logs/mlruns``.
        experiment: null: ``MLFLOW_EXPERIMENT_NAME``, else the recipe's ``name``.
        run_name: null: the run folder's name (``fold_2`` for a fold of a k-fold run).
    """

    tracking_uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None

    def __post_init__(self) -> None:
        for key in ("tracking_uri", "experiment", "run_name"):
            _not_blank(getattr(self, key), key)


@dataclass
class WandbConfig:
    """``trainer.wandb``: the Weights & Biases run of ``trainer.loggers: [wandb]``.

    Attributes:
        project: null: ``WANDB_PROJECT``, else the recipe's ``name``.
        mode: ``online``, ``offline`` or ``disabled``; null: ``WANDB_MODE``, else W&B's
            default (online once logged in).
    """

    project: str | None = None
    mode: WandbMode | None = None

    def __post_init__(self) -> None:
        _not_blank(self.project, "project")


#: ``trainer.loggers`` entries that need an optional package: name -> (module, extra).
TRACKERS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def check_trackers(recipe: Recipe) -> None:
    """Refuse trackers whose package is not installed (checked without importing them).

    Raises:
        RecipeError: naming ``trainer.loggers`` and the extra to install.
    """
    for name in recipe.trainer.loggers:
        if name not in TRACKERS:
            continue
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise RecipeError(
                f"{recipe.source_file}: trainer.loggers: {name!r} needs the {module} package, "
                f"which is not installed; pip install 'lungseg[{extra}]' (or drop {name})"
            )
