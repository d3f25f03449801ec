"""trainer.activation_checkpointing from a config: given stages, auto within a budget, errors."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from videogn.config import CONFIG_DIR, register_configs
from videogn.engine.builders import build_run_spec
from videogn.engine.memory_setup import apply_activation_checkpointing, config_memory
from videogn.memory.estimate import GIB
from videogn.models.i3d import CHECKPOINT_STAGES

register_configs()
TOY = ("model=i3d_tiny", "data.crop_size=32", "sampler=8x4")


@pytest.fixture(scope="module")
def make_cfg():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=[*TOY, *overrides])


def test_default_is_none_and_given_stages_are_kept_in_network_order(make_cfg):
    assert config_memory(make_cfg(), 4, estimate=False).stages == ()
    cfg = make_cfg("trainer.activation_checkpointing=[res3,res2]")
    given = config_memory(cfg, 4, estimate=False)
    assert (given.stages, given.policy, given.estimate) == (("res2", "res3"), "given", None)
    cfg = make_cfg("trainer.activation_checkpointing=all")
    assert config_memory(cfg, 4, estimate=False).stages == CHECKPOINT_STAGES


def test_auto_checkpoints_only_when_the_batch_does_not_fit(make_cfg):
    def needs(setting):
        cfg = make_cfg(f"trainer.activation_checkpointing={setting}")
        return config_memory(cfg, 8).bytes_per_gpu

    plain, everything = needs("none"), needs("all")
    roomy = make_cfg(
        "trainer.activation_checkpointing=auto", f"data.memory_budget_gb={plain / GIB}"
    )
    assert config_memory(roomy, 8).stages == ()
    budget = (plain + everything) / 2 / GIB
    tight = make_cfg("trainer.activation_checkpointing=auto", f"data.memory_budget_gb={budget}")
    memory = config_memory(tight, 8)
    assert memory.policy == "auto" and 0 < len(memory.stages) < len(CHECKPOINT_STAGES)
    assert memory.bytes_per_gpu <= budget * GIB
    assert "largest estimated saving first" in memory.describe()


def test_bad_settings_name_the_key(make_cfg):
    with pytest.raises(ValueError, match=r"trainer.activation_checkpointing=\['res7'\]"):
        build_run_spec(make_cfg("trainer.activation_checkpointing=[res7]"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs data.memory_budget_gb"):
            config_memory(make_cfg("trainer.activation_checkpointing=auto"), 4)


def test_the_setting_reaches_the_model_and_the_log(make_cfg, caplog):
    spec = build_run_spec(make_cfg("trainer.activation_checkpointing=[res2]"))
    model = spec.model.create(pretrained=False)
    assert model.checkpointed_stages == ()
    with caplog.at_level("INFO", logger="videogn.engine.memory_setup"):
        apply_activation_checkpointing(spec, model, 4)
    assert model.checkpointed_stages == ("res2",)
    assert "Activation checkpointing (given): res2." in caplog.text
    with pytest.raises(ValueError, match="Linear has no activation checkpointing"):
        apply_activation_checkpointing(spec, torch.nn.Linear(2, 2), 4)
