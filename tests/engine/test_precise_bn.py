"""Precise BN: the exact mean and (biased) variance of the concatenation of every batch's
activations, on one process and summed over real gloo ranks; a no-op (with a log line)
without BN."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from videogn.engine.precise_bn import update_bn_stats
from videogn.models.factory import create_model


def two_bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(2, 3, 1),
        nn.BatchNorm3d(3),
        nn.ReLU(),
        nn.Conv3d(3, 4, 1),
        nn.BatchNorm3d(4),
        nn.Dropout(0.5),
    )
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1.0, 1.0)
    return model


def shifted_batches(sizes=(4, 4, 4, 4, 4), seed=0) -> list[torch.Tensor]:
    """Batches whose means differ a lot (offset i, scale i+1): the between-batch variance is
    most of the total."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, 2, 2, 3, 3, generator=generator) * (i + 1) + 3 * i
        for i, n in enumerate(sizes)
    ]


def exact_input_moments(model: nn.Module, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer: mean and biased variance of its inputs over ALL batches concatenated,
    each batch run through the model in training mode (BN normalizing with its own batch)."""
    conv1, bn1, relu, conv2 = model[0], model[1], model[2], model[3]
    with torch.no_grad():
        first = [conv1(b) for b in batches]
        normalized = [
            F.batch_norm(f, None, None, bn1.weight, bn1.bias, training=True, eps=bn1.eps)
            for f in first
        ]
        second = [conv2(relu(y)) for y in normalized]
    moments = []
    for inputs in (first, second):
        values = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in inputs], dim=1)
        values = values.double()
        moments.append((values.mean(dim=1), values.var(dim=1, unbiased=False)))
    return moments


@pytest.mark.parametrize("sizes", [(4, 4, 4, 4, 4), (4, 1, 7, 2, 3)], ids=["equal", "unequal"])
def test_running_stats_are_the_moments_of_all_batches_concatenated(sizes):
    model = two_bn_model()
    batches = shifted_batches(sizes)
    expected = exact_input_moments(model, batches)
    model.eval()
    rng_before = torch.get_rng_state()
    assert update_bn_stats(model, iter(batches), num_batches=5) == 5
    for bn, (mean, var) in zip((model[1], model[4]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, mean.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var.float(), rtol=1e-5, atol=1e-5)
    assert model[1].momentum == 0.1 and not model.training  # restored
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout draws left no trace


def test_the_average_of_batch_variances_would_miss_the_spread_of_batch_means():
    """The check above has power: with these batches, the mean of the per-batch variances
    (what precise BN computed before) falls far below the population variance."""
    model = two_bn_model()
    batches = shifted_batches()
    (_, population_var), _ = exact_input_moments(model, batches)
    with torch.no_grad():
        per_batch = torch.stack([model[0](b).var(dim=(0, 2, 3, 4)) for b in batches]).mean(0)
    gap = population_var - per_batch.double()
    assert gap.max() > 0.5 * population_var.max()  # 1e-5 is the tolerance above


def test_stops_after_num_batches():
    model = nn.Sequential(nn.BatchNorm3d(2))
    batches = (torch.randn(2, 2, 1, 2, 2) for _ in range(100))
    assert update_bn_stats(model, batches, num_batches=3) == 3


def test_no_batch_norm_is_a_logged_no_op(caplog):
    model = create_model(
        "i3d_r50",
        norm="gn",
        norm_kwargs={"num_groups": 4},
        num_classes=3,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="videogn.engine.precise_bn"):
        used = update_bn_stats(model, iter([torch.randn(1, 3, 4, 16, 16)]), num_batches=1)
    assert used == 0
    assert "no BatchNorm" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _precise_bn_on_rank(rank: int, world: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = two_bn_model()
        mine = shifted_batches((4, 1, 7, 2, 3))[rank::world]  # 3 and 2 batches: unequal shares
        update_bn_stats(model, iter(mine), num_batches=5)
        # Plain lists: a tensor's shared memory would vanish when this process exits.
        queue.put((rank, [t.tolist() for t in (model[1].running_var, model[4].running_mean)]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_moments_of_every_rank_s_batches(run_on_two_ranks):
    """Across ranks too: the statistics of all batches of both ranks, concatenated."""
    model = two_bn_model()
    (_, var1), (mean2, _) = exact_input_moments(model, shifted_batches((4, 1, 7, 2, 3)))
    results = run_on_two_ranks(_precise_bn_on_rank)
    for rank in (0, 1):
        running_var1, running_mean2 = (torch.tensor(v) for v in results[rank])
        torch.testing.assert_close(running_var1, var1.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(running_mean2, mean2.float(), rtol=1e-5, atol=1e-5)
