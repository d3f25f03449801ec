"""The meta-tensor memory accounting: storage lifetimes and autocast casts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videogn.memory.tracking import AllocationTracker, AutocastEmulation


def test_tracker_follows_allocation_release_and_peak():
    tracker = AllocationTracker()
    with tracker:
        a = torch.empty(1000, device="meta")  # 4000 bytes
        b = a * 2  # +4000
        view = b.view(10, 100)  # same storage: nothing new
        b.mul_(3)  # in place: nothing new
        del b
        assert tracker.live_bytes() == 8000  # the view keeps b's storage alive
        del view
        assert tracker.live_bytes() == 4000
        c = torch.empty(250, dtype=torch.float64, device="meta")  # 2000 bytes
    assert tracker.live_bytes() == 6000
    assert tracker.peak_bytes() == 8000
    assert tracker.allocation_ids([c]) and not tracker.allocation_ids([torch.empty(1)])
    assert tracker.peak_bytes(exclude=tracker.allocation_ids([a])) == 4000
    tracker.close()
    del a, c


def test_tracker_ignores_untracked_tensors_and_their_views():
    weight = torch.empty(100, 100, device="meta")
    tracker = AllocationTracker(untracked=[weight])
    with tracker:
        transposed = weight.t()  # a view of an untracked storage
        product = weight @ transposed  # a new 40000-byte result
    assert tracker.live_bytes() == 40000
    tracker.close()
    del product


def _norm_pool_linear(x: torch.Tensor) -> dict[str, torch.dtype]:
    conv = F.conv3d(x, torch.randn(8, 8, 1, 1, 1))
    bn = F.batch_norm(conv, None, None, torch.ones(8), torch.zeros(8), training=True)
    return {
        "conv3d": conv.dtype,
        "batch_norm": bn.dtype,
        "group_norm": F.group_norm(conv, 4).dtype,
        "max_pool3d": F.max_pool3d(conv, (1, 2, 2)).dtype,
        "adaptive_avg_pool3d": F.adaptive_avg_pool3d(conv, 1).dtype,
        "add": (conv + x).dtype,
        "linear": F.linear(conv.flatten(1), torch.randn(3, 8 * 2 * 16)).dtype,
        "cross_entropy": F.cross_entropy(conv.flatten(1), torch.zeros(2, dtype=torch.long)).dtype,
    }


def test_cpu_policy_emulation_casts_like_real_cpu_autocast():
    x = torch.randn(2, 8, 2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = _norm_pool_linear(x)
    with AutocastEmulation(torch.bfloat16, policy="cpu"):
        emulated = _norm_pool_linear(x)
    assert emulated == real


def test_cuda_policy_runs_group_norm_in_fp32_and_conv_in_low_precision():
    x = torch.randn(2, 8, 2, 4, 4)
    with AutocastEmulation(torch.float16, policy="cuda"):
        dtypes = _norm_pool_linear(x)
    assert dtypes["conv3d"] == dtypes["linear"] == torch.float16
    assert dtypes["group_norm"] == torch.float32  # aten's CUDA autocast fp32 list
    assert dtypes["batch_norm"] == torch.float16  # not listed: runs in its input's dtype


def test_emulation_caches_weight_casts_within_its_region():
    weight = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(2, 4)
    with AutocastEmulation(torch.bfloat16) as emulation:
        F.linear(x, weight)
        F.linear(x, weight)
        assert len(emulation._weight_casts) == 1
    assert not emulation._weight_casts


def test_emulation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="policy 'tpu'"):
        AutocastEmulation(torch.bfloat16, policy="tpu")
    with pytest.raises(ValueError, match="float16 or torch.bfloat16"):
        AutocastEmulation(torch.float32)
