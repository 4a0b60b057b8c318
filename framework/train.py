"""``lungseg train``: Lightning training with the best-Dice and last checkpoints."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

from lungseg.data import SliceDataModule
from lungseg.errors import CheckpointError
from lungseg.manager import load_registry
from lungseg.module import SegmentationModule
from lungseg.recipe import Recipe


@dataclass
class TrainResult:
    best: str
    last: str
    output: Path
    is_global_zero: bool


def _quiet_lightning() -> None:
    # Lightning's tips (e.g. "consider num_workers") are noise for a CLI user.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def build_trainer(recipe: Recipe, output: Path) -> tuple[pl.Trainer, ModelCheckpoint]:
    t = recipe.trainer
    checkpoint = ModelCheckpoint(
        dirpath=output / "checkpoints",
        filename="best-epoch{epoch:03d}-dice{val_dice:.4f}",
        auto_insert_metric_name=False,
        monitor="val_dice",
        mode="max",
        save_top_k=1,
        save_last=True,
    )
    trainer = pl.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        callbacks=[checkpoint],
        logger=CSVLogger(output, name="logs", version=""),
        default_root_dir=output,
        use_distributed_sampler=False,  # our samplers shard themselves correctly
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
    )
    return trainer, checkpoint


@rank_zero_only
def _save_recipe(recipe: Recipe, output: Path) -> None:
    recipe.save(output / "recipe.yaml")


def train(recipe: Recipe, *, resume: bool = False) -> TrainResult:
    """Train the recipe's model; with ``resume`` continue from ``checkpoints/last.ckpt``.

    Returns:
        Paths of the best and last checkpoints.

    Raises:
        CheckpointError: ``resume`` without a last checkpoint.
    """
    _quiet_lightning()
    output = Path(recipe.output)
    last = output / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise CheckpointError(f"{last}: nothing to resume; run `lungseg train` without --resume")
    _save_recipe(recipe, output)
    pl.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    registry = load_registry()
    datamodule = SliceDataModule(recipe, registry)
    module = SegmentationModule(recipe.to_dict())
    trainer, checkpoint = build_trainer(recipe, output)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if trainer.is_global_zero:
        datamodule.write_split(output)
    return TrainResult(
        checkpoint.best_model_path, checkpoint.last_model_path, output, trainer.is_global_zero
    )
