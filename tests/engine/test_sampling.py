"""The training order: sharded without overlap, resumable at any batch, new every epoch."""

from __future__ import annotations

import pytest

from videogn.engine.sampling import ResumableTrainSampler


def sampler(rank=0, world_size=1, num_items=50, batch_size=4, seed=0):
    return ResumableTrainSampler(
        num_items, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed
    )


def test_ranks_get_disjoint_equal_shards_of_full_batches():
    shards = [list(sampler(rank, 3)) for rank in range(3)]
    assert all(len(s) == 16 for s in shards)  # 50 // (4 * 3) = 4 batches of 4 per rank
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == len(flat)


def test_resume_at_a_batch_continues_the_same_order():
    full = sampler()
    full.set_position(epoch=3)
    order = list(full)
    resumed = sampler()
    resumed.set_position(epoch=3, start_batch=5)
    assert list(resumed) == order[5 * 4 :]
    assert len(resumed) == len(order) - 20


def test_epochs_and_seeds_change_the_order():
    s = sampler()
    assert s.epoch_order(0) != s.epoch_order(1)
    assert sampler(seed=1).epoch_order(0) != s.epoch_order(0)
    assert sorted(s.epoch_order(0)) == sorted(set(s.epoch_order(0)))


def test_too_few_videos_for_one_batch_is_an_error():
    with pytest.raises(ValueError, match="lower data.batch_size"):
        sampler(num_items=5, batch_size=4, world_size=2)
