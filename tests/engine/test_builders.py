"""Config -> objects: each group's builder, the norm options passed on, the lr and schedule,
the auto batch, one sampler builder for train and test."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from videogn.config import CONFIG_DIR, register_configs
from videogn.engine.builders import build_run_spec
from videogn.engine.builders.assemble import resolve_batch
from videogn.engine.builders.model import build_model_spec, norm_kwargs
from videogn.engine.distributed import DistInfo

register_configs()


@pytest.fixture(scope="module")
def make_cfg():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))


def test_gn_options_reach_the_model(make_cfg):
    cfg = make_cfg("norm=gn", "norm.num_groups=4")
    assert norm_kwargs(cfg.norm) == {"num_groups": 4, "eps": 1e-5}
    model = build_model_spec(cfg.model, cfg.norm).create(pretrained=False)
    assert model.res2[0].norm_a.num_groups == 4


def test_gn_defaults_to_32_groups_in_the_norm_factory(make_cfg):
    cfg = make_cfg("norm=gn", "norm.num_groups=null", "model=i3d_r50")
    assert "num_groups" not in norm_kwargs(cfg.norm)
    with torch.device("meta"):
        model = build_model_spec(cfg.model, cfg.norm).create(pretrained=False)
    assert model.res2[0].norm_a.num_groups == 32


def test_options_of_other_norms_are_not_passed(make_cfg):
    assert norm_kwargs(make_cfg("norm=bn", "norm.num_groups=4").norm) == {"eps": 1e-5}
    assert norm_kwargs(make_cfg("norm=none").norm) == {}


def test_lr_follows_the_total_batch(make_cfg):
    spec = build_run_spec(make_cfg("experiment=kinetics400_i3d_bn", "data.root=/k"))
    with torch.device("meta"):
        model = spec.model.create(pretrained=False)
    assert spec.optim.optimizer(model, total_batch=64).param_groups[0]["lr"] == pytest.approx(0.01)
    assert spec.optim.optimizer(model, total_batch=32).param_groups[0]["lr"] == pytest.approx(0.005)


def test_schedule_in_epochs(make_cfg):
    spec = build_run_spec(make_cfg("optim.epochs=2.5", "optim.warmup_epochs=0.5"))
    schedule = spec.optim.schedule(iterations_per_epoch=10)
    assert schedule.total_iterations == 25 and schedule.warmup_iterations == 5
    assert schedule.step_iterations == [10, 19]  # 0.375 and 0.75 of 25, rounded up


def test_fixed_batch_and_accumulation(make_cfg):
    spec = build_run_spec(make_cfg("data.batch_size=3", "trainer.accumulation_steps=2"))
    assert resolve_batch(spec, DistInfo()) == (3, 2)
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        resolve_batch(build_run_spec(make_cfg("data.batch_size=0")), DistInfo())
    with pytest.raises(ValueError, match="trainer.accumulation_steps must be >= 1"):
        build_run_spec(make_cfg("trainer.accumulation_steps=0"))


def test_auto_batch_asks_the_memory_planner(make_cfg):
    """The planner's batch grows with the budget (a constant batch would fail) and always
    accumulates to the target total."""
    planned = {}
    for budget in (1.2, 1.5):  # GiB; the planner reserves 1 GiB of workspace
        spec = build_run_spec(make_cfg(
            "norm=gn", "data.batch_size=auto", f"data.memory_budget_gb={budget}",
            "data.target_total_batch=64", "sampler=32x2", "data.crop_size=112",
            "data.scale_range=[128,160]",
        ))  # fmt: skip
        per_device, accumulation = resolve_batch(spec, DistInfo(world_size=2))
        assert per_device * accumulation * 2 == 64
        planned[budget] = per_device
    assert 1 <= planned[1.2] < planned[1.5]


@pytest.mark.parametrize("policy", ["loop", "repeat_last"])
def test_train_and_test_samplers_share_clip_and_short_video_policy(make_cfg, policy):
    spec = build_run_spec(make_cfg("sampler=8x4", f"sampler.short_video={policy}",
                                   "test.num_clips=3"))  # fmt: skip
    train, test = spec.samplers.train, spec.samplers.test
    assert (train.num_frames, train.frame_interval) == (test.num_frames, test.frame_interval)
    assert test.num_clips == 3 and spec.samplers.clip == "8x4"
    # A 10-frame video is shorter than the 29-frame window: the policy decides the indices.
    (indices, *_) = test(10)
    expected = [0, 4, 8, 2, 6, 0, 4, 8] if policy == "loop" else [0, 4, 8, 9, 9, 9, 9, 9]
    assert indices.tolist() == expected
    assert train(10, rng=None).tolist() == expected  # no slack: the start is frame 0


def test_specs_hold_no_config(make_cfg):
    """Config becomes objects in the builders: nothing built holds an OmegaConf node."""
    from omegaconf import DictConfig, ListConfig

    spec = build_run_spec(make_cfg())
    for name in ("model", "data", "samplers", "optim", "trainer", "test"):
        part = getattr(spec, name)
        values = list(vars(part).values()) if hasattr(part, "__dict__") else []
        values += [getattr(part, f) for f in getattr(part, "__dataclass_fields__", {})]
        assert not any(isinstance(v, (DictConfig, ListConfig)) for v in values), name


@pytest.mark.parametrize(("value", "views"), [(1, 1), (3, 3), ("full", 1)])
def test_num_crops_is_checked_when_the_run_is_built(make_cfg, value, views):
    """A misspelled test.num_crops fails before training, not after it at the test."""
    spec = build_run_spec(make_cfg(f"test.num_crops={value}"))
    assert spec.test.num_crops == value and spec.test_transform().views_per_clip == views
    with pytest.raises(ValueError, match=r"test.num_crops.*1, 3 or 'full'.*'ful'"):
        build_run_spec(make_cfg("test.num_crops=ful"))


def test_a_validation_period_in_epochs_follows_the_list_size(make_cfg):
    """trainer.val_period_epochs: points every 2 epochs whatever the iterations per epoch (the
    Kinetics list's real size); a val_period in iterations, when given, wins; <= 0 is named."""
    spec = build_run_spec(make_cfg("trainer.val_period=0", "trainer.val_period_epochs=2"))
    assert spec.trainer.validation_period(3656) == 7312
    assert spec.trainer.validation_period(16) == 32
    spec = build_run_spec(make_cfg("trainer.val_period=5", "trainer.val_period_epochs=2"))
    assert spec.trainer.validation_period(16) == 5
    with pytest.raises(ValueError, match="trainer.val_period_epochs"):
        build_run_spec(make_cfg("trainer.val_period_epochs=0"))


def test_the_fully_conv_window_is_the_training_clips_res5_map(make_cfg):
    spec = build_run_spec(
        make_cfg(
            "test.head=fully_conv", "sampler=8x4", "data.crop_size=48", "data.scale_range=[48,54]"
        )
    )
    assert (spec.test.head.kind, spec.test.head.window) == ("fully_conv", (1, 2, 2))
    spec = build_run_spec(make_cfg("experiment=kinetics400_i3d_bn", "data.root=/k"))
    assert (spec.test.head.kind, spec.test.head.window) == ("fully_conv", (4, 7, 7))
    assert spec.samplers.test.clip_positions == "nonlocal"
    assert build_run_spec(make_cfg()).test.head.kind == "pooled"
