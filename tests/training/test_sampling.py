from __future__ import annotations

import numpy as np
import pytest

from lungseg.core.manager import load_registry
from lungseg.training.sampling import (
    DistributedWeightedSampler,
    ShardSampler,
    class_balanced_weights,
)


def test_class_weights_give_each_class_half_the_mass():
    labels = np.array([0] * 90 + [1] * 10)
    weights = class_balanced_weights(labels)
    assert weights[labels == 1].sum() == pytest.approx(weights[labels == 0].sum())


def test_tumour_weighted_sampler_draws_about_half_tumour_slices():
    labels = np.array([0] * 950 + [1] * 50)
    build = load_registry().create("sampler", "tumor-weighted", {}, "sampler")
    sampler = build(labels, num_replicas=1, rank=0, seed=3)
    drawn = np.array(list(sampler))
    assert len(drawn) == 1000
    assert 0.42 < labels[drawn].mean() < 0.58


def test_ranks_split_one_weighted_draw_disjointly_and_epochs_differ():
    weights = class_balanced_weights(np.array([0] * 30 + [1] * 7))
    ranks = [DistributedWeightedSampler(weights, num_replicas=3, rank=r, seed=5) for r in range(3)]
    full = DistributedWeightedSampler(weights, num_replicas=3, rank=0, seed=5).draw().tolist()
    shares = [list(s) for s in ranks]
    assert all(len(s) == len(ranks[0]) == 13 for s in shares)
    interleaved = [shares[r][i] for i in range(13) for r in range(3)]
    assert interleaved == full  # positions are disjoint and together are the whole draw
    for s in ranks:
        s.set_epoch(1)
    assert [list(s) for s in ranks] != shares


def test_uniform_without_replacement_is_a_permutation():
    build = load_registry().create("sampler", "uniform", {}, "sampler")
    drawn = list(build(np.zeros(20, int), num_replicas=1, rank=0, seed=0))
    assert sorted(drawn) == list(range(20))


def test_shard_sampler_covers_every_index_once_in_order():
    shards = [list(ShardSampler(11, 3, r)) for r in range(3)]
    assert [i for shard in shards for i in shard] == list(range(11))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_bad_sampler_parameters():
    from lungseg.core.errors import RecipeError

    with pytest.raises(RecipeError, match="num_samples"):
        load_registry().create("sampler", "tumor-weighted", {"num_samples": 0}, "sampler")


def test_weighted_draw_is_reproducible_per_seed_and_pads_to_equal_shares():
    weights = class_balanced_weights(np.array([0] * 40 + [1] * 5))
    a = DistributedWeightedSampler(weights, num_samples=45, num_replicas=4, rank=1, seed=9)
    b = DistributedWeightedSampler(weights, num_samples=45, num_replicas=4, rank=1, seed=9)
    c = DistributedWeightedSampler(weights, num_samples=45, num_replicas=4, rank=1, seed=10)
    assert list(a) == list(b) and list(a) != list(c)
    assert len(a) == 12 and len(a.draw()) == 48  # ceil(45 / 4) per rank, every rank equal
    with pytest.raises(ValueError, match="rank"):
        DistributedWeightedSampler(weights, num_replicas=2, rank=2)


def test_seed_and_epoch_combine_without_collisions():
    weights = np.ones(50)

    def draw(seed: int, epoch: int) -> tuple[int, ...]:
        sampler = DistributedWeightedSampler(weights, seed=seed)
        sampler.set_epoch(epoch)
        return tuple(sampler)

    assert draw(0, 1) != draw(1, 0)  # `seed + epoch` made these the same draw
    assert draw(3, 4) == draw(3, 4)
    draws = {(s, e): draw(s, e) for s in range(8) for e in range(8)}
    assert len(set(draws.values())) == len(draws)
    # large seeds too: (2**32, 5) and (0, 5 * 2**32 + 1) pack into the same 32-bit words
    assert draw(2**32, 5) != draw(0, 5 * 2**32 + 1)


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize(("size", "world"), [(1, 2), (2, 8), (3, 8), (5, 4), (7, 7)])
def test_every_rank_yields_len_items_even_with_fewer_samples_than_ranks(replacement, size, world):
    weights = class_balanced_weights(np.arange(size) % 2)
    ranks = [
        DistributedWeightedSampler(
            weights, replacement=replacement, num_replicas=world, rank=r, seed=1
        )
        for r in range(world)
    ]
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [len(s) for s in ranks] == [-(-size // world)] * world
    assert all(0 <= i < size for share in shares for i in share)
    interleaved = [shares[i % world][i // world] for i in range(len(shares[0]) * world)]
    assert interleaved == ranks[0].draw().tolist()
    if not replacement:  # a permutation, repeated whole to pad: every sample equally often
        assert sorted(interleaved[:size]) == list(range(size))
        counts = np.bincount(interleaved, minlength=size)
        assert counts.max() - counts.min() <= 1


def test_without_replacement_needs_enough_samples_with_weight():
    with pytest.raises(ValueError, match="non-zero weight"):
        DistributedWeightedSampler(np.array([0.0, 1.0, 1.0]), replacement=False)
    assert sorted(DistributedWeightedSampler(np.array([0.0, 1.0, 1.0]), 2, False)) == [1, 2]
    with pytest.raises(ValueError, match="num_samples"):
        DistributedWeightedSampler(np.ones(3), num_samples=-1)


@pytest.mark.parametrize(("size", "world"), [(0, 2), (1, 3), (2, 5), (3, 4)])
def test_shard_sampler_with_fewer_samples_than_ranks(size, world):
    samplers = [ShardSampler(size, world, r) for r in range(world)]
    shards = [list(s) for s in samplers]
    assert [len(s) for s in samplers] == [len(s) for s in shards]
    assert [i for shard in shards for i in shard] == list(range(size))
    assert max(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(size, world, world)
