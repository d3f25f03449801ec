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


def decay_of(model, groups) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_no_weight_decay_on_norm_params_and_biases_by_default(norm):
    model = tiny_model(norm)
    decay = decay_of(model, param_groups(model, 1e-4))
    assert set(decay) == {n for n, _ in model.named_parameters()}  # each parameter once
    assert decay["stem.conv.weight"] == decay["head.fc.weight"] == 1e-4
    assert decay["stem.norm.weight"] == decay["stem.norm.bias"] == decay["head.fc.bias"] == 0.0


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_norm_weight_decay_reaches_exactly_the_norms_gamma_and_beta(norm):
    model = tiny_model(norm)
    groups = param_groups(model, 1e-4, norm_weight_decay=3e-5)
    decay = decay_of(model, groups)
    norm_params = {
        f"{module_name}.{p}"
        for module_name, module in model.named_modules()
        if "norm" in module_name.split(".")[-1]
        for p in ("weight", "bias")
    }
    assert {n for n, d in decay.items() if d == 3e-5} == norm_params
    assert len(groups) == 3  # weights 1e-4, norms 3e-5, the classifier bias 0


def test_weight_decay_on_norm_and_bias_when_asked():
    model = tiny_model()
    groups = param_groups(model, 1e-4, norm_weight_decay=1e-4, decay_bias=True)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters()))


def test_kinetics_recipe_decays_like_the_nonlocal_code():
    """Non-local model_builder_video.py: WEIGHT_DECAY on every parameter not named "_bn" (the
    classifier's bias included), WEIGHT_DECAY_BN = 0 in its Kinetics configs."""
    from hydra import compose, initialize_config_dir

    from videogn.config import CONFIG_DIR, register_configs
    from videogn.engine.builders.optim import build_optim

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for experiment in ("kinetics400_i3d_bn", "table8/gn_32x2_bs4"):
            cfg = compose("train", [f"experiment={experiment}", "data.root=/k400"])
            model = tiny_model(cfg.norm.name.name)
            decay = decay_of(model, build_optim(cfg.optim).optimizer(model, 64).param_groups)
            assert decay["head.fc.bias"] == decay["head.fc.weight"] == 1e-4, experiment
            assert decay["res2.0.norm_a.weight"] == decay["res2.0.norm_a.bias"] == 0.0


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
