"""Precise BN: exact averages over batches, a no-op (with a log line) without BN."""

from __future__ import annotations

import logging

import torch
from torch import nn

from videogn.engine.precise_bn import update_bn_stats
from videogn.models.factory import create_model


def test_running_stats_become_the_average_over_batches():
    model = nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3), nn.Dropout(0.5))
    batches = [torch.randn(4, 2, 2, 3, 3) * (i + 1) + i for i in range(5)]
    with torch.no_grad():
        features = [model[0](b) for b in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3, 4)) for f in features]).mean(0)
    expected_var = torch.stack([f.var(dim=(0, 2, 3, 4)) for f in features]).mean(0)
    model.eval()
    rng_before = torch.get_rng_state()
    used = update_bn_stats(model, iter(batches), num_batches=5)
    assert used == 5
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.1 and not model.training  # restored
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout draws left no trace


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
