"""Check a batch plan on the real CUDA device: measure a step, confirm it fits, back off on OOM.

The estimate cannot see cuDNN's choice of algorithms or the allocator's fragmentation on the
day; a probe runs real training steps (forward, loss, backward; no optimizer step, with BN
running statistics restored afterwards) at a reference batch and at the planned batch, and
walks the batch down when a step runs out of memory or over the budget, instead of crashing
the run. Without CUDA it refuses clearly; the planner's numbers then stand unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from videogn.memory.estimate import GIB, autocast_dtype
from videogn.memory.plan import BatchPlan

# torch.OutOfMemoryError is the name since torch 2.5; torch.cuda's is the same class.
OUT_OF_MEMORY_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)


@dataclass(frozen=True)
class ProbeResult:
    """What real steps said about a planned per-device batch.

    Attributes:
        batch_size: the largest batch that ran within the budget (at most the planned one).
        planned_batch: the batch the plan asked for.
        peak_bytes: batch -> measured peak of the steps that ran.
        failed: batches that ran out of memory or over the budget, in the order tried.
        budget_bytes: the budget the peaks were held against.
    """

    batch_size: int
    planned_batch: int
    peak_bytes: dict[int, int]
    failed: list[int] = field(default_factory=list)
    budget_bytes: int = 0

    @property
    def backed_off(self) -> bool:
        return self.batch_size < self.planned_batch

    def bytes_per_clip(self) -> float | None:
        """Measured slope between the smallest and largest batch that ran (None: one point)."""
        if len(self.peak_bytes) < 2:
            return None
        low, high = min(self.peak_bytes), max(self.peak_bytes)
        return (self.peak_bytes[high] - self.peak_bytes[low]) / (high - low)

    def describe(self) -> str:
        peaks = ", ".join(
            f"{b} clips: {p / GIB:.2f} GiB" for b, p in sorted(self.peak_bytes.items())
        )
        text = f"Memory probe: measured peaks {peaks} (budget {self.budget_bytes / GIB:.2f} GiB)."
        if self.backed_off:
            text += (
                f" Planned {self.planned_batch} clips did not fit (tried {self.failed}); "
                f"backed off to {self.batch_size}."
            )
        else:
            text += f" The planned {self.planned_batch} clips fit."
        return text


def fit_batch(
    run_step: Callable[[int], int],
    planned_batch: int,
    budget_bytes: int,
    *,
    reference_batch: int = 1,
) -> ProbeResult:
    """Find the largest batch up to ``planned_batch`` whose real step fits ``budget_bytes``.

    Args:
        run_step: runs one step at a batch size and returns its peak bytes; may raise an
            out-of-memory error, which counts as not fitting.
        planned_batch: the batch to confirm.
        budget_bytes: the most a step's peak may reach.
        reference_batch: a small batch measured first, giving the slope of memory per clip.

    Raises:
        RuntimeError: when not even ``reference_batch`` clips fit.
    """
    peaks: dict[int, int] = {}
    failed: list[int] = []

    def fits(batch: int) -> bool:
        try:
            peak = run_step(batch)
        except OUT_OF_MEMORY_ERRORS:
            failed.append(batch)
            return False
        peaks[batch] = peak
        if peak > budget_bytes:
            failed.append(batch)
            return False
        return True

    reference = min(reference_batch, planned_batch)
    if not fits(reference):
        raise RuntimeError(
            f"memory probe: even {reference} clip(s) per device do not fit the budget of "
            f"{budget_bytes / GIB:.2f} GiB (peaks: {peaks}); use smaller clips or bf16"
        )
    batch = planned_batch
    while batch > reference and not fits(batch):
        # Step down by an eighth at a time: a handful of tries even when the plan is far off.
        batch = max(reference, batch - max(1, batch // 8))
    return ProbeResult(batch, planned_batch, peaks, failed, budget_bytes)


def cuda_step_peak(
    model: nn.Module,
    batch_size: int,
    num_frames: int,
    crop_size: int,
    *,
    dtype: str = "fp32",
    channels_last: bool = False,
    extra_bytes: int = 0,
) -> int:
    """Run one real training step of a CUDA ``model`` and return its peak reserved bytes.

    The step leaves the model as it found it: gradients are dropped and buffers (BN running
    statistics) restored. ``extra_bytes`` adds what the step does not allocate but training
    will (optimizer state).
    """
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise RuntimeError(f"cuda_step_peak needs a model on a CUDA device, not {device}")
    low_dtype = autocast_dtype(dtype)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        clip = torch.randn(batch_size, 3, num_frames, crop_size, crop_size, device=device)
        if channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        with torch.autocast("cuda", dtype=low_dtype or torch.float16, enabled=bool(low_dtype)):
            loss = F.cross_entropy(model(clip), labels)
        loss.backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_reserved(device) + extra_bytes
    finally:
        clip = labels = loss = None
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        torch.cuda.empty_cache()


def probe_batch(
    model: nn.Module,
    plan: BatchPlan,
    num_frames: int,
    crop_size: int,
    *,
    dtype: str = "fp32",
    channels_last: bool = False,
    optimizer_state_bytes: int | None = None,
) -> ProbeResult:
    """Confirm ``plan.per_device_batch`` on the CUDA device ``model`` lives on, or back off.

    Args:
        model: the training model, already on its CUDA device, in train mode.
        plan: from :func:`videogn.memory.plan.plan_batch`; its budget is the limit.
        optimizer_state_bytes: added to each measured peak; default one fp32 buffer per
            trainable parameter (SGD momentum).

    Peaks are the caching allocator's reserved bytes plus the optimizer state plus what the
    device holds outside the allocator, held against ``plan.budget_bytes``.

    Returns:
        a :class:`ProbeResult`; when it backed off, ``plan.limited_to(result.batch_size, ...)``
        gives the plan to run.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "probe_batch measures a CUDA device and none is available; the planned batch "
            "stands as estimated"
        )
    if optimizer_state_bytes is None:
        optimizer_state_bytes = sum(
            p.numel() * p.element_size() for p in model.parameters() if p.requires_grad
        )
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise RuntimeError(f"probe_batch needs the model on its CUDA device, not on {device}")
    # What the device holds outside PyTorch's allocator (CUDA context, other processes)
    # counts against the budget too, as it does on a device of exactly that size.
    free, total = torch.cuda.mem_get_info(device)
    outside_allocator = max(0, total - free - torch.cuda.memory_reserved(device))

    def run_step(batch: int) -> int:
        return cuda_step_peak(
            model,
            batch,
            num_frames,
            crop_size,
            dtype=dtype,
            channels_last=channels_last,
            extra_bytes=optimizer_state_bytes + outside_allocator,
        )

    return fit_batch(run_step, plan.per_device_batch, plan.budget_bytes)
