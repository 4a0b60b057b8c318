"""The sections of a recipe (``data``, ``store``, ``trainer``...) as typed dataclasses.

Each field's type is what :func:`lungseg.core.recipe_schema.build` checks a YAML value against; a
fixed set of choices is a ``Literal`` (``scheduler: Scheduler``), checked there and nowhere
else. Value ranges are checked by each section's ``__post_init__`` with
:func:`~lungseg.core.recipe_schema.require`, so a section built in Python is checked too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lungseg.core.recipe_schema import Component, require
from lungseg.core.recipe_trackers import MlflowConfig, WandbConfig

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "EvaluateConfig",
    "LoggerName",
    "MlflowConfig",
    "OptimizerConfig",
    "Precision",
    "Preset",
    "Scheduler",
    "Source",
    "SplitConfig",
    "StoreConfig",
    "SyntheticConfig",
    "TrainerConfig",
    "WandbConfig",
]

Source = Literal["synthetic", "folder", "msd", "kaggle"]
"""``data.source``: generated scans, a folder on disk, the MSD archive, or a Kaggle copy."""

Scheduler = Literal["none", "cosine", "plateau"]
"""``optimizer.scheduler``: the learning-rate schedule."""

Precision = Literal[
    "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", 32
]
"""``trainer.precision``: Lightning's precision names (``32`` and ``"32"`` mean ``32-true``)."""

LoggerName = Literal["csv", "tensorboard", "mlflow", "wandb"]
"""An entry of ``trainer.loggers`` (``mlflow`` and ``wandb`` are the extras of those names)."""

Preset = Literal["easy", "hard"]
"""``data.synthetic.preset``: the quickstart's easy scans, or hard ones that tell recipes apart
(small and juxta-pleural nodules, several lesions, scans without tumour, varying spacing)."""


@dataclass
class SyntheticConfig:
    """Parameters of the built-in synthetic CT data (``data.source: synthetic``).

    The defaults of ``lungseg synth`` and :func:`lungseg.data.synth.write_dataset` too.
    """

    cases: int = 16
    seed: int = 0
    size: int = 64
    slices: int = 72
    abdomen_slices: int = 30
    test_cases: int = 2
    preset: Preset = "easy"

    def __post_init__(self) -> None:
        require(self.cases >= 1, "cases", ">= 1", self.cases)
        require(self.test_cases >= 0, "test_cases", ">= 0", self.test_cases)
        require(self.seed >= 0, "seed", ">= 0", self.seed)
        require(self.size >= 16, "size", ">= 16", self.size)
        abd = self.abdomen_slices
        require(abd >= 0, "abdomen_slices", ">= 0", abd)
        require(self.slices >= abd + 5, "slices", f">= abdomen_slices + 5 = {abd + 5}", self.slices)


@dataclass
class DataConfig:
    """Where the CT scans come from. ``root`` holds (or will hold) the MSD layout."""

    source: Source = "synthetic"
    root: str = "data/synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    url: str | None = None
    md5: str | None = None
    #: ``OWNER/DATASET`` of a Kaggle copy (``source: kaggle``).
    dataset: str | None = None
    #: 2.5D context: the K slices above and below feed the network as 2K+1 input channels
    #: (0: one slice, the seed's setup).
    context: int = 0

    def __post_init__(self) -> None:
        rule = "OWNER/DATASET when source is 'kaggle'"
        require(self.source != "kaggle" or bool(self.dataset), "dataset", rule, self.dataset)
        require(self.context >= 0, "context", ">= 0 (0: one slice)", self.context)


@dataclass
class StoreConfig:
    """The Zarr slice store: a local path or an fsspec URL.

    ``cache_bytes`` bounds the decoded cases each reader (every DataLoader worker) keeps in
    memory for random access; 0 reads slice by slice (docs/store.md).
    """

    path: str = "data/store.zarr"
    storage_options: dict[str, Any] = field(default_factory=dict)
    cache_bytes: int = 256 * 1024**2  # local reads are fast uncached (docs/store.md)

    def __post_init__(self) -> None:
        rule = ">= 0 (0 turns the cache off)"
        require(self.cache_bytes >= 0, "cache_bytes", rule, self.cache_bytes)


@dataclass
class SplitConfig:
    """Case-level split (never by slice): fractions of cases held out, and the seed.

    With ``folds`` > 1 the cases left after ``test_fraction`` are split into that many folds
    (k-fold cross-validation by case); fold ``fold`` validates and the others train, and
    ``val_fraction`` is not used.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    folds: int = 1
    fold: int = 0

    def __post_init__(self) -> None:
        require(self.folds >= 1, "folds", ">= 1 (1: one train/validation split)", self.folds)
        rule = f"in [0, folds) = [0, {self.folds})"
        require(0 <= self.fold < self.folds, "fold", rule, self.fold)
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            require(0.0 <= value < 1.0, key, "in [0, 1)", value)
        total = self.val_fraction + self.test_fraction
        rule = "< 1 with test_fraction (some cases must be left to train on)"
        require(total < 1.0, "val_fraction", rule, self.val_fraction)


@dataclass
class AugmentConfig:
    """Affine augmentation of training slices (albumentations), image and mask jointly."""

    enabled: bool = True
    p: float = 0.5
    rotate: float = 15.0
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    translate: float = 0.0625
    #: An albumentations serialised transform (``A.to_dict(...)``); replaces the affine above.
    transform: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        require(0.0 <= self.p <= 1.0, "p", "in [0, 1]", self.p)


@dataclass
class OptimizerConfig:
    """Adam (the seed's optimiser) and its learning-rate schedule.

    ``scheduler``: ``none``, ``cosine`` (per epoch down to ``min_lr`` at ``max_epochs``) or
    ``plateau`` (times ``plateau_factor`` after ``plateau_patience`` epochs without a better
    ``val_dice``).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: Scheduler = "none"
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 3

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", "> 0", self.lr)
        for key in ("weight_decay", "min_lr", "plateau_patience"):
            require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        factor = self.plateau_factor
        require(0.0 < factor < 1.0, "plateau_factor", "between 0 and 1 (exclusive)", factor)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and loader settings.

    ``accelerator``, ``devices`` and ``strategy`` are Lightning's own (open-ended: plugins
    register more), so Lightning checks them when the Trainer is built. The progress bar is
    shown when ``enable_progress_bar`` and the console allows bars (stderr is a terminal and
    no ``-q``).
    """

    max_epochs: int = 30
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Precision = "32-true"
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    channels_last: bool = False
    compile: bool = False
    #: Stop after this many epochs without a better ``val_dice`` (``null``: never).
    early_stopping_patience: int | None = None
    #: Any of ``csv`` (``<output>/logs/metrics.csv``), ``tensorboard``, ``mlflow`` and
    #: ``wandb`` (``pip install 'lungseg[mlflow]'`` / ``'lungseg[wandb]'``).
    loggers: list[LoggerName] = field(default_factory=lambda: ["csv", "tensorboard"])
    #: Where the MLflow run goes (``loggers: [mlflow]``).
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    #: Where the W&B run goes (``loggers: [wandb]``).
    wandb: WandbConfig = field(default_factory=WandbConfig)
    #: Also refresh ``last.ckpt`` every N optimiser steps (0: at the end of each epoch only).
    checkpoint_every_n_steps: int = 0

    def __post_init__(self) -> None:
        at_least_one = ("max_epochs", "num_nodes", "batch_size", "log_every_n_steps")
        for key in (*at_least_one, "accumulate_grad_batches"):
            require(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)
        steps = self.checkpoint_every_n_steps
        require(steps >= 0, "checkpoint_every_n_steps", ">= 0 (0: off)", steps)
        clip = self.gradient_clip_val
        require(clip is None or clip > 0, "gradient_clip_val", "> 0 or null (no clipping)", clip)
        patience = self.early_stopping_patience
        rule = ">= 1 or null (off)"
        require(patience is None or patience >= 1, "early_stopping_patience", rule, patience)


@dataclass
class EvaluateConfig:
    """Evaluation and prediction settings.

    ``tta`` averages the probabilities of each slice and its left-right mirror;
    ``postprocess`` lists postprocessor plugins applied to the thresholded mask in the
    scan's geometry. Both are off by default (see benchmarks/README.md for their effect).
    ``save_predictions`` makes ``lungseg evaluate`` write each case's mask as NIfTI.
    """

    threshold: float = 0.5
    batch_size: int = 16
    tta: bool = False
    postprocess: list[Component] = field(default_factory=list)
    save_predictions: bool = True

    def __post_init__(self) -> None:
        t = self.threshold
        require(0.0 < t < 1.0, "threshold", "between 0 and 1 (exclusive)", t)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
