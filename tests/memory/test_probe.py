"""The CUDA probe: its back-off logic everywhere, real steps where a GPU is present."""

from __future__ import annotations

import pytest
import torch

from videogn.memory.estimate import GIB, MemoryEstimate
from videogn.memory.plan import plan_batch, plan_from_estimate
from videogn.memory.probe import fit_batch, probe_batch
from videogn.models import create_model

TOY = {"name": "i3d_r50", "base_width": 8, "stage_depths": (1, 1, 1, 1), "num_classes": 10}


class Device:
    """A device of ``capacity`` bytes: a step of b clips needs fixed + b * per_clip bytes.

    It raises the out-of-memory error CUDA raises, so that fit_batch's handling of it runs
    for real on a machine without a GPU.
    """

    def __init__(self, capacity: int, fixed: int, per_clip: int):
        self.capacity, self.fixed, self.per_clip = capacity, fixed, per_clip
        self.tried: list[int] = []

    def step(self, batch: int) -> int:
        self.tried.append(batch)
        need = self.fixed + batch * self.per_clip
        if need > self.capacity:
            raise torch.cuda.OutOfMemoryError(f"tried to allocate {need} bytes")
        return need


def test_planned_batch_that_fits_is_kept():
    device = Device(capacity=100, fixed=10, per_clip=10)
    result = fit_batch(device.step, planned_batch=8, budget_bytes=100)
    assert (result.batch_size, result.backed_off, result.failed) == (8, False, [])
    assert device.tried == [1, 8]
    assert result.bytes_per_clip() == 10
    assert "fit" in result.describe()


def test_out_of_memory_backs_off_to_a_batch_that_runs():
    device = Device(capacity=100, fixed=10, per_clip=10)  # 9 clips fit
    result = fit_batch(device.step, planned_batch=24, budget_bytes=10**9)
    assert result.backed_off and result.batch_size <= 9
    assert result.batch_size >= 8  # steps of an eighth land close to the real limit
    assert all(b > 9 for b in result.failed)
    assert "backed off" in result.describe()


def test_peak_over_the_budget_counts_as_not_fitting():
    device = Device(capacity=10**9, fixed=10, per_clip=10)
    result = fit_batch(device.step, planned_batch=8, budget_bytes=60)
    assert result.batch_size == 5 and 8 in result.failed


def test_not_even_one_clip_is_a_clear_error():
    device = Device(capacity=15, fixed=10, per_clip=10)
    with pytest.raises(RuntimeError, match="even 1 clip"):
        fit_batch(device.step, planned_batch=4, budget_bytes=100)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_probe_refuses_clearly_without_cuda():
    estimate = MemoryEstimate(2**20, 2**20, 0, 0, 0, 0, 0, GIB)
    plan = plan_from_estimate(estimate, 2 * GIB, batch_statistics="bn")
    with pytest.raises(RuntimeError, match="CUDA device"):
        probe_batch(create_model(**TOY), plan, 8, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probe_measures_real_steps_on_cuda():
    model = create_model(**TOY, norm="bn").cuda().train()
    running_mean = model.stem.norm.running_mean.clone()
    plan = plan_batch(TOY | {"norm": "bn"}, 8, 64, budget_bytes=2 * GIB, target_total_batch=8)
    result = probe_batch(model, plan, 8, 64)
    assert result.batch_size == plan.per_device_batch and not result.backed_off
    assert set(result.peak_bytes) == {1, plan.per_device_batch}
    # The probe leaves no trace on the model.
    assert torch.equal(model.stem.norm.running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())
