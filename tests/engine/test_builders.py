"""Config -> objects: the norm options passed on, the lr and schedule, the auto batch."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from videogn.config import CONFIG_DIR, register_configs
from videogn.engine.builders import (
    build_model,
    build_optimizer,
    build_schedule,
    norm_kwargs,
    resolve_batch,
)
from videogn.engine.distributed import DistInfo

register_configs()


@pytest.fixture(scope="module")
def make_cfg():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))


def test_gn_options_reach_the_model(make_cfg):
    cfg = make_cfg("norm=gn", "norm.num_groups=4")
    assert norm_kwargs(cfg.norm) == {"num_groups": 4, "eps": 1e-5}
    model = build_model(cfg, pretrained=False)
    assert model.res2[0].norm_a.num_groups == 4


def test_options_of_other_norms_are_not_passed(make_cfg):
    assert norm_kwargs(make_cfg("norm=bn", "norm.num_groups=4").norm) == {"eps": 1e-5}
    assert norm_kwargs(make_cfg("norm=none").norm) == {}


def test_lr_follows_the_total_batch(make_cfg):
    cfg = make_cfg("experiment=kinetics400_i3d_bn", "data.root=/k")
    with torch.device("meta"):
        model = build_model(cfg, pretrained=False)
    assert build_optimizer(cfg, model, total_batch=64).param_groups[0]["lr"] == pytest.approx(0.01)
    assert build_optimizer(cfg, model, total_batch=32).param_groups[0]["lr"] == pytest.approx(0.005)


def test_schedule_in_epochs(make_cfg):
    cfg = make_cfg("optim.epochs=2.5", "optim.warmup_epochs=0.5")
    schedule = build_schedule(cfg, iterations_per_epoch=10)
    assert schedule.total_iterations == 25 and schedule.warmup_iterations == 5
    assert schedule.step_iterations == [10, 19]  # 0.375 and 0.75 of 25, rounded up


def test_fixed_batch_and_accumulation(make_cfg):
    cfg = make_cfg("data.batch_size=3", "trainer.accumulation_steps=2")
    assert resolve_batch(cfg, DistInfo()) == (3, 2)
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        resolve_batch(make_cfg("data.batch_size=0"), DistInfo())


def test_auto_batch_asks_the_memory_planner(make_cfg):
    cfg = make_cfg(
        "norm=gn", "data.batch_size=auto", "data.memory_budget_gb=2", "data.target_total_batch=16"
    )
    per_device, accumulation = resolve_batch(cfg, DistInfo(world_size=2))
    assert per_device >= 1 and per_device * accumulation * 2 == 16
