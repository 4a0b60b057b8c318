"""Training: the slice dataset, DDP-safe sampling, the LightningModule, the Trainer, checkpoints."""
