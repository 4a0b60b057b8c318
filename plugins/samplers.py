"""Default samplers: ``tumor-weighted`` (the seed's oversampling) and ``uniform``.

Both build :class:`lungseg.api.DistributedWeightedSampler`, a torch ``Sampler``; torch is
imported when a sampler is built for training, not when this plugin is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from lungseg import api, hookimpl

if TYPE_CHECKING:
    from torch.utils.data import Sampler

    SamplerBuilder = Callable[..., Sampler]


def tumor_weighted(num_samples: int | None = None, replacement: bool = True) -> SamplerBuilder:
    """Weight each slice by 1 / frequency of its class (tumour or not): about half tumour slices.

    Args:
        num_samples: slices drawn per epoch over all ranks (default: the training set size).
        replacement: draw with replacement (as the seed's ``WeightedRandomSampler``).
    """
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}")

    def build(labels: np.ndarray, *, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        return api.DistributedWeightedSampler(
            api.class_balanced_weights(labels), num_samples, replacement, num_replicas, rank, seed
        )

    return build


def uniform(num_samples: int | None = None) -> SamplerBuilder:
    """Every slice equally likely, without replacement (a shuffled epoch)."""
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}")

    def build(labels: np.ndarray, *, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        weights = np.ones(len(labels))
        replacement = num_samples is not None and num_samples > len(labels)
        return api.DistributedWeightedSampler(
            weights, num_samples, replacement, num_replicas, rank, seed
        )

    return build


@hookimpl
def lungseg_add_samplers(registry) -> None:
    registry.add("tumor-weighted", tumor_weighted)
    registry.add("uniform", uniform)
