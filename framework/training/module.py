"""The LightningModule: a model plugin trained with a loss plugin and Adam; val Dice monitored."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lungseg import __version__
from lungseg.core.recipe import MONITOR, Recipe


class SegmentationModule(pl.LightningModule):
    """Binary segmentation of 2D slices: a given network trained with a given loss and Adam.

    The module is given its parts (see :mod:`lungseg.core.build`); it stores the recipe (without
    secrets) once in every checkpoint, as ``checkpoint["lungseg"]["recipe"]``, so a
    checkpoint alone rebuilds the same network and preprocessing
    (:mod:`lungseg.training.checkpoint`).

    Args:
        model: the network, ``(N, C, H, W)`` images to ``(N, 1, H, W)`` logits.
        loss: ``loss(logits, target) -> scalar tensor``.
        recipe: the run's recipe (optimiser, schedule, threshold, memory format, compile).

    Logged per epoch: ``train_loss``, ``val_loss`` (mean over validation slices) and
    ``val_dice`` (:data:`lungseg.core.recipe.MONITOR`): Dice pooled over every validation pixel
    of the preprocessed slices, with probabilities thresholded at ``evaluate.threshold``
    (1.0 when neither prediction nor truth has a tumour pixel).

    ``trainer.channels_last`` stores weights and inputs in NHWC (faster convolutions with
    mixed precision on tensor-core GPUs); ``trainer.compile`` runs the network through
    ``torch.compile`` during ``fit`` (the checkpoint keeps the plain network's weights).

    Every checkpoint holds ``checkpoint["lungseg"]``: ``version``, ``recipe``, ``epoch``,
    ``global_step`` and ``val_dice``, the Dice of the very weights in the file (``None`` when
    they were saved between validations, e.g. by a step checkpoint mid-epoch).
    """

    def __init__(self, model: torch.nn.Module, loss: Any, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.model = model
        self.loss_fn = loss
        self.threshold = recipe.evaluate.threshold
        self.channels_last = recipe.trainer.channels_last
        self._val = torch.zeros(5, dtype=torch.float64)
        #: ``(global_step, epoch, val_dice)`` of the latest full validation of this run.
        self._validated: tuple[int, int, float] | None = None
        #: ``checkpoint["lungseg"]`` (less the recipe) of the latest checkpoint written.
        self.saved_info: dict[str, Any] | None = None
        # Not a registered submodule, so state_dict keys stay those of ``self.model``.
        self.__dict__["_compiled"] = None

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.recipe.trainer.compile and self.__dict__["_compiled"] is None:
            self.__dict__["_compiled"] = torch.compile(self.model)

    def on_fit_end(self) -> None:
        self.__dict__["_compiled"] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1, H, W)`` for images ``(N, 2K+1, H, W)`` (``data.context: K``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = self.__dict__["_compiled"]
        return (compiled or self.model)(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        image, mask = batch
        loss = self.loss_fn(self(image), mask)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=image.shape[0],
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = torch.zeros(5, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        image, mask = batch
        logits = self(image)
        loss = self.loss_fn(logits, mask)
        pred = torch.sigmoid(logits.float()) >= self.threshold
        truth = mask >= 0.5
        self._val += torch.stack(
            [
                (pred & truth).sum(),
                pred.sum(),
                truth.sum(),
                loss.detach().double() * image.shape[0],
                torch.tensor(image.shape[0], device=self.device),
            ]
        ).to(self._val)

    def on_validation_epoch_end(self) -> None:
        # One reduction per epoch: ranks may hold different numbers of validation slices.
        total = self.trainer.strategy.reduce(self._val.clone(), reduce_op="sum")
        inter, p, t, loss_sum, n = total.tolist()
        dice = 2 * inter / (p + t) if p + t > 0 else 1.0
        if not self.trainer.sanity_checking:  # a sanity check sees only a few batches
            self._validated = (self.trainer.global_step, self.current_epoch, float(dice))
        self.log(MONITOR, dice, prog_bar=True, sync_dist=False)
        self.log("val_loss", loss_sum / max(n, 1), prog_bar=True, sync_dist=False)

    def configure_optimizers(self) -> Any:
        """Adam, with the recipe's ``optimizer.scheduler`` stepped once per epoch."""
        opt = self.recipe.optimizer
        adam = torch.optim.Adam(self.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
        if opt.scheduler == "cosine":
            scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(
                adam, T_max=self.recipe.trainer.max_epochs, eta_min=opt.min_lr
            )
            return {"optimizer": adam, "lr_scheduler": {"scheduler": scheduler}}
        if opt.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                adam,
                mode="max",
                factor=opt.plateau_factor,
                patience=opt.plateau_patience,
                min_lr=opt.min_lr,
            )
            config = {"scheduler": scheduler, "monitor": MONITOR, "interval": "epoch"}
            return {"optimizer": adam, "lr_scheduler": config}
        return adam

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the recipe, and the epoch, step and ``val_dice`` of the weights being saved.

        The same hook runs for ``best.ckpt`` and ``last.ckpt``, so ``val_dice`` is taken from
        the validation of these weights (same global step), never from an older one.
        """
        step, epoch = int(checkpoint["global_step"]), int(checkpoint["epoch"])
        dice = None
        if self._validated is not None and self._validated[0] == step:
            _, epoch, dice = self._validated
        info = {"version": __version__, "epoch": epoch, "global_step": step, "val_dice": dice}
        checkpoint["lungseg"] = {**info, "recipe": self.recipe.to_dict()}
        self.saved_info = info
