"""Experiment trackers: MLflow and Weights & Biases through Lightning's own loggers.

``trainer.loggers: [mlflow]`` (``pip install 'lungseg[mlflow]'``) and ``[wandb]``
(``'lungseg[wandb]'``) add Lightning's ``MLFlowLogger`` / ``WandbLogger``. A tracker whose
package is missing is refused by :func:`check_trackers` before any work. Each tracker run gets:

- params: the recipe without secrets, flattened to dotted keys (``model.features``,
  ``preprocess.3.size``, ``trainer.max_epochs``);
- metrics: what training logs per epoch (``train_loss``, ``val_loss``, ``val_dice``), by
  Lightning;
- artifacts, when training ends: the best checkpoint with its JSON (``checkpoints/``) and the
  loss-curve plot (``loss_curve.png``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger

from lungseg.core.console import log
from lungseg.core.errors import RecipeError
from lungseg.core.recipe import MONITOR, Recipe
from lungseg.core.recipe_trackers import check_trackers

__all__ = ["TrackerArtifacts", "flat_params", "tracker_loggers"]


def flat_params(recipe: Recipe) -> dict[str, Any]:
    """The recipe without secrets as ``{dotted.key: value}`` (lists of mappings by index)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}")
        else:
            flat[key] = value

    walk(recipe.to_dict(secrets=False), "")
    return flat


@contextlib.contextmanager
def _file_store_allowed(allowed: bool) -> Iterator[None]:
    """MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE``; allow lungseg's default."""
    name = "MLFLOW_ALLOW_FILE_STORE"
    before = os.environ.get(name)
    if allowed and before is None:
        os.environ[name] = "true"
    try:
        yield
    finally:
        if allowed and before is None:
            os.environ.pop(name, None)


def _mlflow(recipe: Recipe, output: Path) -> MLFlowLogger:
    cfg = recipe.trainer.mlflow
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    default = not uri
    uri = uri or (output / "logs" / "mlruns").resolve().as_uri()
    experiment = cfg.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe.name
    try:
        with _file_store_allowed(default):
            return MLFlowLogger(
                experiment_name=experiment,
                run_name=cfg.run_name or output.name,
                tracking_uri=uri,
                log_model=False,  # the best checkpoint is logged by TrackerArtifacts
            )
    except Exception as exc:  # an unreachable or refused store: MLflow's own exception types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(
            f"{recipe.source_file}: trainer.mlflow.tracking_uri: MLflow cannot use {uri} "
            f"({detail}); set trainer.mlflow.tracking_uri or MLFLOW_TRACKING_URI"
        ) from exc


def _wandb(recipe: Recipe, output: Path) -> WandbLogger:
    cfg = recipe.trainer.wandb
    kwargs: dict[str, Any] = {"mode": cfg.mode} if cfg.mode else {}
    folder = output / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=cfg.project or os.environ.get("WANDB_PROJECT") or recipe.name,
        name=output.name,
        save_dir=str(folder),
        log_model=False,  # the best checkpoint is logged by TrackerArtifacts
        **kwargs,
    )


def tracker_loggers(recipe: Recipe, output: Path) -> list[Logger]:
    """Lightning loggers for the recipe's trackers (``mlflow``, ``wandb``), in its order.

    Raises:
        RecipeError: a tracker's package is missing, or MLflow refuses its tracking URI.
    """
    check_trackers(recipe)
    build = {"mlflow": _mlflow, "wandb": _wandb}
    return [build[name](recipe, output) for name in recipe.trainer.loggers if name in build]


def _upload(logger: Logger, path: Path, folder: str = "") -> None:
    """Log ``path`` as an artifact of the tracker's run, under ``folder``."""
    if isinstance(logger, MLFlowLogger):
        logger.experiment.log_artifact(logger.run_id, str(path), folder or None)
    elif isinstance(logger, WandbLogger):  # W&B keeps the path below base_path
        base = path.parent.parent if folder else path.parent
        logger.experiment.save(str(path), base_path=str(base), policy="now")


class TrackerArtifacts(Callback):
    """Log the recipe as params when training starts, and artifacts when it ends.

    Args:
        best: the ``best.ckpt`` callback, whose file (and JSON) is logged.
        trackers: the tracker loggers (MLflow, W&B) of the run.
    """

    def __init__(self, best: Any, trackers: list[Logger]) -> None:
        self.best = best
        self.trackers = trackers
        self._epochs: dict[int, dict[str, float]] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        recipe = getattr(pl_module, "recipe", None)
        if trainer.is_global_zero and isinstance(recipe, Recipe):
            params = flat_params(recipe)
            for logger in self.trackers:
                logger.log_hyperparams(params)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        keys = [k for k in ("train_loss", "val_loss", MONITOR) if k in metrics]
        self._epochs[trainer.current_epoch] = {k: float(metrics[k]) for k in keys}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        files: list[tuple[Path, str]] = []
        if self.best.best_model_path:
            best = Path(self.best.best_model_path)
            files += [(p, "checkpoints") for p in (best, best.with_suffix(".json")) if p.is_file()]
        curve = self._loss_curve(trainer, pl_module)
        files += [(curve, "")] if curve else []
        for logger in self.trackers:
            for path, folder in files:
                try:
                    _upload(logger, path, folder)
                except Exception as exc:  # a tracker outage must not lose the trained run
                    name = type(logger).__name__
                    log.warning("%s could not upload %s: %s", name, path.name, exc)

    def _loss_curve(self, trainer: pl.Trainer, pl_module: Any) -> Path | None:
        """``<output>/logs/loss_curve.png`` from the CSV log (all epochs, also after a resume),
        else from the epochs of this fit."""
        from lungseg.inference.figures import plot_loss_curve  # matplotlib, at the end only

        out = Path(trainer.default_root_dir) / "logs" / "loss_curve.png"
        recipe = getattr(pl_module, "recipe", None)
        loss = recipe.loss.name if isinstance(recipe, Recipe) else None
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
                table = Path(logger.log_dir) / "metrics.csv"
                if table.is_file():
                    return plot_loss_curve(table, out, loss_name=loss)
        if not self._epochs:
            return None
        keys = sorted({k for row in self._epochs.values() for k in row})
        with tempfile.TemporaryDirectory(prefix="lungseg-") as tmp:
            table = Path(tmp) / "metrics.csv"
            with open(table, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["epoch", *keys])
                writer.writeheader()
                writer.writerows({"epoch": e, **row} for e, row in sorted(self._epochs.items()))
            return plot_loss_curve(table, out, loss_name=loss)
