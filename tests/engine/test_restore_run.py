"""``restore_run`` (videogn-test, videogn-predict, the clip-length sweep) on checkpoints whose
recorded config is older than the schema."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from videogn.config import CONFIG_DIR, register_configs
from videogn.engine.builders import build_run_spec
from videogn.engine.distributed import DistInfo
from videogn.engine.run import restore_run


def test_a_run_from_before_a_key_moved_is_restored(tmp_path):
    """optim.weight_decay_norm (a bool) became optim.norm_weight_decay: a checkpoint that
    records the old key still tests, with its weights."""
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train")
    model = build_run_spec(cfg).model.create(pretrained=False)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # as runs record it
    del config["optim"]["norm_weight_decay"]
    config["optim"]["weight_decay_norm"] = False
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "old.pt")

    run = restore_run(tmp_path / "old.pt", ["test.num_clips=2"], dist=DistInfo(), loader_workers=0)

    assert run.spec.test.num_clips == 2
    for name, value in model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], value), name
