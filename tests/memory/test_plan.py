"""The planner: batch splits, the paper's per-GPU batches, and what it tells about BN and GN."""

from __future__ import annotations

import pytest
import torch

from videogn.memory.estimate import GIB, MemoryEstimate, estimate_memory
from videogn.memory.plan import (
    BatchPlan,
    plan_batch,
    plan_from_estimate,
    split_total_batch,
)

TOY = {"name": "i3d_r50", "base_width": 8, "stage_depths": (1, 1, 1, 1), "num_classes": 10}


def fake_estimate(per_clip_gib: float, fixed_gib: float) -> MemoryEstimate:
    # A hand-made estimate: only its two totals matter to the planner.
    return MemoryEstimate(
        bytes_per_clip=int(per_clip_gib * GIB),
        saved_bytes_per_clip=0,
        activation_constant_bytes=0,
        parameter_bytes=0,
        gradient_bytes=0,
        optimizer_bytes=0,
        buffer_bytes=0,
        workspace_bytes=int(fixed_gib * GIB),
        fragmentation_margin=0.0,
    )


@pytest.mark.parametrize(
    ("total", "world", "largest", "expected"),
    [
        (64, 8, 12, (8, 1)),
        (64, 8, 5, (4, 2)),
        (64, 8, 3, (2, 4)),
        (64, 1, 8, (8, 8)),
        (64, 4, 16, (16, 1)),
        (12, 1, 5, (4, 3)),
    ],
)
def test_split_reaches_the_total_exactly_with_fewest_steps(total, world, largest, expected):
    per_device, steps = split_total_batch(total, world, largest)
    assert (per_device, steps) == expected
    assert per_device * steps * world == total and per_device <= largest


def test_split_rejects_totals_the_devices_cannot_share():
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        split_total_batch(64, 3, 8)
    with pytest.raises(ValueError, match="not even one clip"):
        split_total_batch(64, 8, 0)


def test_largest_batch_is_the_last_that_fits():
    estimate = fake_estimate(per_clip_gib=1.0, fixed_gib=2.0)
    assert estimate.largest_batch(10 * GIB) == 8
    assert estimate.largest_batch(10 * GIB - 1) == 7
    assert estimate.largest_batch(2 * GIB) == 0


@pytest.mark.slow
def test_planner_reproduces_the_paper_batches_and_sizes_a_v100():
    # The paper trains 32x2 clips with 8 per GPU and 64x1 clips with 4 (Table 8).
    bn = {"name": "i3d_r50", "norm": "bn"}
    est = {t: estimate_memory(bn, num_frames=t, crop_size=224) for t in (32, 64)}
    # Smallest budget that fits 8 clips of 32 frames; 64-frame clips then fit 4.
    budget = est[32].total_bytes(8)
    largest = {t: e.largest_batch(budget) for t, e in est.items()}
    assert largest == {32: 8, 64: 4}, f"at {budget / GIB:.2f} GiB"
    assert est[32].largest_batch(budget - 1) == 7
    v100 = {t: e.largest_batch(16 * GIB) for t, e in est.items()}
    assert v100[32] >= 2 * v100[64] >= 8  # 16 GiB holds more than the paper's batches
    plan = plan_from_estimate(
        est[64], budget, batch_statistics="bn", target_total_batch=64, world_size=8
    )
    assert (plan.per_device_batch, plan.accumulation_steps, plan.statistics_batch) == (4, 2, 4)


def test_bn_plan_says_the_per_device_batch_is_the_statistics_batch():
    plan = plan_from_estimate(
        fake_estimate(1.0, 1.0),
        6 * GIB,
        batch_statistics="bn",
        target_total_batch=64,
        world_size=8,
    )
    assert (plan.per_device_batch, plan.accumulation_steps, plan.total_batch) == (4, 2, 64)
    assert plan.statistics_batch == 4
    text = plan.describe()
    assert "statistics batch" in text and "not equivalent" in text and "Table 8" in text


def test_sync_bn_statistics_span_the_devices():
    plan = plan_from_estimate(
        fake_estimate(1.0, 1.0),
        6 * GIB,
        batch_statistics="sync_bn",
        target_total_batch=64,
        world_size=8,
    )
    assert plan.statistics_batch == 32 and "SyncBN over 8 devices" in plan.describe()


def test_gn_plan_says_accumulation_is_exact():
    plan = plan_from_estimate(
        fake_estimate(1.0, 1.0),
        6 * GIB,
        batch_statistics=None,
        target_total_batch=64,
        world_size=8,
    )
    assert plan.statistics_batch is None
    assert "same gradients as one step of 8" in plan.describe()


def test_plan_batch_end_to_end_on_a_toy_model():
    plan = plan_batch(
        TOY | {"norm": "gn", "norm_kwargs": {"num_groups": 4}},
        8,
        64,
        "fp32",
        budget_bytes=GIB + 20 * 2**20,
        target_total_batch=16,
        world_size=2,
    )
    assert isinstance(plan, BatchPlan)
    assert plan.per_device_batch * plan.accumulation_steps * 2 == plan.total_batch == 16
    assert plan.per_device_batch <= plan.max_per_device_batch
    assert plan.fixed_bytes > GIB  # the 1 GiB workspace margin is part of it
    assert plan.fixed_bytes + plan.per_device_batch * plan.bytes_per_clip <= plan.budget_bytes


def test_plan_without_target_takes_the_largest_batch_and_can_be_limited():
    plan = plan_from_estimate(fake_estimate(1.0, 1.0), 10 * GIB, batch_statistics="bn")
    assert (plan.per_device_batch, plan.accumulation_steps, plan.total_batch) == (9, 1, 9)
    limited = plan.limited_to(5, "The probe ran out of memory at 9 clips.")
    assert limited.per_device_batch == limited.statistics_batch == 5
    assert limited.describe().count("The probe ran out of memory") == 1


def test_budget_too_small_for_one_clip_is_a_clear_error():
    with pytest.raises(ValueError, match="a single clip needs"):
        plan_from_estimate(fake_estimate(1.0, 1.0), GIB, batch_statistics=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_no_budget_without_cuda_fails_clearly():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        plan_batch(TOY | {"norm": "bn"}, 8, 64)
