"""trainer.tf32 / trainer.cudnn_benchmark / deterministic reach torch's switches."""

import pytest
import torch

from videogn.engine.numerics import configure_numerics


@pytest.fixture(autouse=True)
def _restore():
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
    )
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[2:4]
    torch.use_deterministic_algorithms(saved[4])


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_switches_both_convolutions_and_matmuls(tf32):
    configure_numerics(deterministic=False, cudnn_benchmark=True, tf32=tf32)
    assert torch.backends.cudnn.allow_tf32 is tf32
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.backends.cudnn.benchmark is True


def test_deterministic_turns_autotuning_off():
    configure_numerics(deterministic=True, cudnn_benchmark=True, tf32=False)
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()


def test_restored_run_gets_the_runs_switches(tmp_path):
    """videogn-test, videogn-predict and the clip-length sweep test with the run's numerics:
    torch's own default (cuDNN TF32 on) must not survive restore_run of a tf32=false run."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from videogn.config import CONFIG_DIR, register_configs
    from videogn.engine.builders import build_run_spec
    from videogn.engine.distributed import DistInfo
    from videogn.engine.run import restore_run

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", ["trainer.tf32=false", "trainer.cudnn_benchmark=false"])
    model = build_run_spec(cfg).model.create(pretrained=False)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # as runs record it
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "model.pt")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    restore_run(tmp_path / "model.pt", dist=DistInfo(), loader_workers=0)

    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.benchmark is False
