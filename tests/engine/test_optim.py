"""The Non-local recipe: which parameters get weight decay, lr scaling, the step schedule."""

from __future__ import annotations

import pytest
import torch

from videogn.engine.optim import (
    StepWarmupSchedule,
    build_scheduler,
    build_sgd,
    param_groups,
    scaled_lr,
)
from videogn.models.factory import create_model


def tiny_model(norm="bn"):
    return create_model(
        "i3d_r50",
        norm=norm,
        num_classes=5,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
        norm_kwargs={"num_groups": 4} if norm == "gn" else None,
    )


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_no_weight_decay_on_norm_params_and_biases(norm):
    model = tiny_model(norm)
    decayed, undecayed = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    undecayed_names = {names[id(p)] for p in undecayed["params"]}
    assert decayed["weight_decay"] == 1e-4 and undecayed["weight_decay"] == 0.0
    assert "stem.conv.weight" in decayed_names and "head.fc.weight" in decayed_names
    assert {"stem.norm.weight", "stem.norm.bias", "head.fc.bias"} <= undecayed_names
    assert decayed_names | undecayed_names == set(names.values())


def test_weight_decay_on_norm_and_bias_when_asked():
    model = tiny_model()
    groups = param_groups(model, 1e-4, decay_norm=True, decay_bias=True)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters()))


def test_sgd_is_nesterov_with_scaled_lr():
    lr = scaled_lr(0.01, total_batch=32, base_batch_size=64)
    assert lr == pytest.approx(0.005)
    optimizer = build_sgd(tiny_model(), lr)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    assert all(g["lr"] == pytest.approx(0.005) for g in optimizer.param_groups)


def test_paper_steps_at_150k_and_300k_of_400k():
    schedule = StepWarmupSchedule(total_iterations=400_000)
    assert schedule.step_iterations == [150_000, 300_000]
    assert schedule(149_999) == 1.0
    assert schedule(150_000) == pytest.approx(0.1)
    assert schedule(300_000) == pytest.approx(0.01)


def test_steps_scale_with_the_length_of_the_run():
    # Half the batch, same epochs: twice the iterations, steps at the same fractions.
    assert StepWarmupSchedule(total_iterations=800_000).step_iterations == [300_000, 600_000]


def test_linear_warmup_then_constant():
    schedule = StepWarmupSchedule(100, warmup_iterations=10, warmup_start_factor=0.1)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(5) == pytest.approx(0.55)
    assert schedule(10) == schedule(20) == 1.0


def test_bad_step_fractions_are_rejected():
    with pytest.raises(ValueError, match="fractions"):
        StepWarmupSchedule(100, step_fractions=(150_000, 300_000))


def test_scheduler_updates_per_iteration_and_resumes():
    model = torch.nn.Linear(2, 2)
    optimizer = build_sgd(model, 1.0)
    scheduler = build_scheduler(optimizer, StepWarmupSchedule(10, step_fractions=(0.5,)))
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    state = scheduler.state_dict()
    fresh_optimizer = build_sgd(model, 1.0)
    fresh = build_scheduler(fresh_optimizer, StepWarmupSchedule(10, step_fractions=(0.5,)))
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 5
