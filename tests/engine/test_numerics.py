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
