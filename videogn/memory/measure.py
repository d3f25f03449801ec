"""Measure a real training step's memory on the CPU, independently of the estimator.

Two measurements, neither of which uses meta tensors or the estimator's tracker:

- the CPU allocator's own count: ``torch.profiler`` with ``profile_memory=True`` logs every
  allocation and release of real tensors; the bytes allocated during forward and not yet
  released when it ends are what forward leaves for backward (the activation memory), and
  the running sum over forward + backward gives the step's peak. That peak includes the CPU
  convolution backend's scratch buffers, which a GPU allocates differently (cuDNN
  workspaces), so it describes the CPU, not the GPU the estimate is for;
- autograd's own list: ``saved_tensors_hooks`` sees every tensor saved for backward; the
  distinct storages among them (by data pointer, parameters and buffers left out) are summed.

They serve as the check of :mod:`videogn.memory.estimate` (see benchmarks/bench_memory.py).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch._C._autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from videogn.memory.estimate import autocast_dtype


@dataclass(frozen=True)
class MeasuredStep:
    """Bytes of one real CPU step, above what existed before it."""

    forward_held_bytes: int  # allocator: allocated in forward, still alive after it
    saved_tensor_bytes: int  # autograd: distinct storages saved for backward (no model state)
    peak_bytes: int | None  # allocator: peak over forward + backward (None: no backward)


def _allocator_trace(prof: profile) -> tuple[int, int]:
    """(bytes still allocated at the end, peak) from a profile's CPU memory events."""
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return live, peak


def _cpu_profile() -> profile:
    return profile(activities=[ProfilerActivity.CPU], profile_memory=True)


def measure_cpu_step(
    model: nn.Module, clip: torch.Tensor, *, backward: bool = False, dtype: str = "fp32"
) -> MeasuredStep:
    """Run forward (+ cross-entropy and backward) of ``model`` on a real CPU ``clip``.

    Args:
        model: on the CPU, in the mode to measure (train for a training step).
        clip: [N, C, T, H, W] input on the CPU.
        backward: also run the loss and backward and report the step's peak.
        dtype: "fp32", or "bf16"/"fp16" for real CPU autocast.
    """
    if clip.device.type != "cpu":
        raise ValueError(f"measure_cpu_step measures the CPU allocator; clip is on {clip.device}")
    low_dtype = autocast_dtype(dtype)
    autocast = torch.autocast("cpu", dtype=low_dtype) if low_dtype else nullcontext()
    model_state = [*model.parameters(), *model.buffers()]
    state_storages = {t.untyped_storage().data_ptr() for t in model_state}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() and storage.data_ptr() not in state_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    labels = torch.zeros(clip.shape[0], dtype=torch.long)
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    with _cpu_profile() as forward_prof, autocast, hooks:
        # Copied inside the profile so that the input batch, alive through the step as in
        # training, counts as it does in the estimate.
        inputs = clip.clone()
        logits = model(inputs)
    held, _ = _allocator_trace(forward_prof)
    peak = None
    if backward:
        with _cpu_profile() as backward_prof:
            with autocast:
                loss = F.cross_entropy(logits, labels)
            del logits, inputs
            loss.backward()
            del loss
        _, backward_peak = _allocator_trace(backward_prof)
        # Backward starts with the forward's leftovers alive.
        peak = held + backward_peak
    model.zero_grad(set_to_none=True)
    return MeasuredStep(held, sum(saved.values()), peak)
