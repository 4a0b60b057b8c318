from __future__ import annotations

import numpy as np
import pytest

from lungseg.manager import load_registry
from lungseg.sampling import DistributedWeightedSampler, ShardSampler, class_balanced_weights


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
    from lungseg.errors import RecipeError

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
