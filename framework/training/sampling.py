"""Samplers that stay correct under DDP: every rank draws the same sequence, takes its share."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights ``1 / frequency(class)`` (the seed's steps 3A-3C).

    Args:
        labels: int array, one class label per sample (1 = tumour slice, 0 = none).

    Returns:
        float64 weights; every present class gets the same total weight. With one class
        only, the weights are uniform.
    """
    labels = np.asarray(labels).astype(np.int64)
    if labels.size == 0:
        raise ValueError("no training slices to sample from")
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


class DistributedWeightedSampler(Sampler[int]):
    """A ``WeightedRandomSampler`` whose epochs are split disjointly across DDP ranks.

    Every rank draws the same ``total`` indices (seeded by a hash of ``(seed, epoch)``, so no
    two different pairs share a draw) and keeps positions ``rank, rank + num_replicas, ...``;
    together the ranks cover the full weighted draw exactly once. ``total`` is
    ``num_samples`` rounded up to a multiple of ``num_replicas``, so every rank yields
    ``len()`` indices even with fewer samples than ranks (the draw is then repeated).
    Call :meth:`set_epoch` (Lightning does) for a new draw.

    Args:
        weights: one non-negative weight per sample.
        num_samples: draws per epoch over all ranks (default: number of samples).
        replacement: draw with replacement (the seed's ``WeightedRandomSampler`` default).
        num_replicas: world size.
        rank: this process's rank.
        seed: base seed, identical on every rank.
    """

    def __init__(
        self,
        weights: np.ndarray,
        num_samples: int | None = None,
        replacement: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be a non-empty 1D array of non-negative numbers")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.weights = torch.as_tensor(weights)
        self.total_requested = int(num_samples or weights.size)
        if self.total_requested < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not replacement and self.total_requested > np.count_nonzero(weights):
            raise ValueError(
                "num_samples exceeds the number of samples with a non-zero weight, which a "
                "draw without replacement cannot reach"
            )
        self.replacement = replacement
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.per_rank = math.ceil(self.total_requested / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator_seed(self) -> int:
        """The torch generator seed of this epoch: a 64-bit hash of ``(seed, epoch)``.

        ``seed + epoch`` would give ``(0, 1)`` and ``(1, 0)`` the same draw; the hash of
        the pair's unambiguous text differs for every pair (up to 64-bit collisions).
        """
        text = f"lungseg-sampler:{int(self.seed)}:{int(self.epoch)}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")

    def draw(self) -> torch.Tensor:
        """The whole epoch's draw, identical on every rank (``len() * num_replicas`` long)."""
        gen = torch.Generator().manual_seed(self.generator_seed())
        total = self.per_rank * self.num_replicas
        if self.replacement:
            return torch.multinomial(self.weights, total, True, generator=gen)
        idx = torch.multinomial(self.weights, self.total_requested, False, generator=gen)
        # pad so ranks get equal shares: repeat the draw as often as needed (fewer samples
        # than ranks needs more than one extra copy)
        return idx.repeat(math.ceil(total / idx.numel()))[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """Every index once, in order, split across ranks without duplicates (for validation).

    Rank ``r`` gets a contiguous block; shares differ by at most one sample, so metrics must
    be reduced once per epoch (sums), not per step. With fewer samples than ranks some ranks
    get none (``len() == 0``).
    """

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        if size < 0 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need size >= 0 and 0 <= rank < num_replicas, got {size}, {rank}, {num_replicas}"
            )
        bounds = np.linspace(0, size, num_replicas + 1).round().astype(int)
        self.start, self.stop = int(bounds[rank]), int(bounds[rank + 1])

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
