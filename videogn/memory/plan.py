"""Batch planning: the largest per-device batch for a memory budget, and how to reach a total.

A run's total batch (the recipe's 64 clips) is ``per_device_batch * accumulation_steps *
world_size``. How the three may be traded depends on the normalization:

- GN (and LN, IN, frozen BN, no norm) normalizes each clip on its own, so accumulating
  ``k`` steps of ``b`` clips gives the same gradient as one step of ``k * b`` clips: memory
  can be traded for steps freely.
- BN normalizes with statistics over the clips of one forward pass on one device, so the
  per-device batch *is* the statistics batch, whatever the accumulation (SyncBN: the
  per-device batch times the world size). Shrinking it to fit memory changes the model's
  training, which is exactly what Table 8 of the GN paper measures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from videogn.memory.estimate import (
    DEFAULT_WORKSPACE_BYTES,
    GIB,
    MemoryEstimate,
    build_meta_model,
    estimate_module_memory,
)
from videogn.models.norm import has_batch_norm


def _gib(num_bytes: float) -> str:
    if num_bytes < GIB / 10:
        return f"{num_bytes / 2**20:.1f} MiB"
    return f"{num_bytes / GIB:.2f} GiB"


@dataclass(frozen=True)
class BatchPlan:
    """A per-device batch, accumulation and world size, and why.

    Attributes:
        per_device_batch: clips per forward pass on one device.
        accumulation_steps: forward/backward passes per optimizer step.
        world_size: devices (data-parallel processes).
        total_batch: clips per optimizer step, the product of the three.
        bytes_per_clip, fixed_bytes: the memory estimate the plan rests on.
        budget_bytes: the memory budget of one device.
        max_per_device_batch: the most clips that fit the budget.
        statistics_batch: clips BN computes its statistics over (None: no batch statistics).
        batch_statistics: "bn", "sync_bn" or None (see :func:`batch_statistics`).
        target_total_batch: the total the plan was asked to reach (None: as large as fits).
        notes: sentences for the log, the BN/GN consequence among them.
    """

    per_device_batch: int
    accumulation_steps: int
    world_size: int
    total_batch: int
    bytes_per_clip: int
    fixed_bytes: int
    budget_bytes: int
    max_per_device_batch: int
    statistics_batch: int | None
    batch_statistics: str | None = None
    target_total_batch: int | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One paragraph for the training log."""
        head = (
            f"Batch plan: {self.per_device_batch} clips per device x "
            f"{self.accumulation_steps} accumulation step(s) x {self.world_size} device(s) "
            f"= {self.total_batch} clips per optimizer step. Memory: {_gib(self.bytes_per_clip)} "
            f"per clip + {_gib(self.fixed_bytes)} fixed against a budget of "
            f"{_gib(self.budget_bytes)}, which fits at most {self.max_per_device_batch} clips "
            "per device."
        )
        return " ".join([head, *self.notes])

    def limited_to(self, max_per_device_batch: int, reason: str) -> BatchPlan:
        """The same plan with at most ``max_per_device_batch`` clips per device (after a probe)."""
        return _assemble(
            self.bytes_per_clip,
            self.fixed_bytes,
            self.budget_bytes,
            min(max_per_device_batch, self.max_per_device_batch),
            self.batch_statistics,
            self.target_total_batch,
            self.world_size,
            [reason],
        )


def accumulation_matches_large_batch(model: nn.Module) -> bool:
    """True when accumulating k steps of b clips equals one step of k*b clips for ``model``.

    That holds unless some layer normalizes with batch statistics (BN in train mode).
    """
    return not has_batch_norm(model)


def batch_statistics(model: nn.Module, norm: object = None) -> str | None:
    """How ``model`` (built with ``norm``) normalizes in train mode: "bn", "sync_bn" or None.

    ``norm`` is the model's norm name, needed because meta models build sync_bn as bn.
    """
    if accumulation_matches_large_batch(model):
        return None
    if norm == "sync_bn" or any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return "sync_bn"
    return "bn"


def _statistics_batch(kind: str | None, per_device_batch: int, world_size: int) -> int | None:
    if kind is None:
        return None
    return per_device_batch * world_size if kind == "sync_bn" else per_device_batch


def _norm_notes(
    kind: str | None, per_device_batch: int, accumulation_steps: int, world_size: int
) -> list[str]:
    statistics_batch = _statistics_batch(kind, per_device_batch, world_size)
    if statistics_batch is None:
        note = (
            "No layer normalizes with batch statistics (GN/LN/IN/frozen BN): each clip is "
            "normalized on its own, so "
        )
        if accumulation_steps == 1:
            return [
                note + "the per-device batch is a memory choice only (k accumulated steps "
                "of b clips give the same gradients as one step of k*b)."
            ]
        return [
            note + f"{accumulation_steps} accumulated steps of {per_device_batch} give the "
            f"same gradients as one step of {per_device_batch * accumulation_steps} (up to "
            "float rounding)."
        ]
    note = (
        f"BN: the per-device batch is the statistics batch; BN statistics come from "
        f"{statistics_batch} clips"
    )
    if kind == "sync_bn":
        note += f" (SyncBN over {world_size} devices)"
    note += ", whatever the accumulation."
    if accumulation_steps > 1:
        note += (
            f" Accumulating {accumulation_steps} steps restores the total batch for the "
            "gradient, not BN's normalization batch: this run is not equivalent to one with "
            f"{per_device_batch * accumulation_steps} clips per device (the effect Table 8 of "
            "the GN paper measures)."
        )
    return [note]


def split_total_batch(
    target_total_batch: int,
    world_size: int,
    max_per_device_batch: int,
) -> tuple[int, int]:
    """(per-device batch, accumulation steps) reaching ``target_total_batch`` exactly.

    Uses the fewest accumulation steps whose per-device batch divides the device's share and
    fits ``max_per_device_batch``.
    """
    if target_total_batch < 1 or world_size < 1:
        raise ValueError(
            f"target_total_batch={target_total_batch}, world_size={world_size}: expected >= 1"
        )
    if target_total_batch % world_size:
        raise ValueError(
            f"target total batch {target_total_batch} is not divisible by world size "
            f"{world_size}; choose a total that is a multiple of the number of devices"
        )
    share = target_total_batch // world_size
    for steps in range(1, share + 1):
        if share % steps == 0 and share // steps <= max_per_device_batch:
            return share // steps, steps
    raise ValueError(f"max_per_device_batch={max_per_device_batch}: not even one clip fits")


def _assemble(
    bytes_per_clip: int,
    fixed_bytes: int,
    budget_bytes: int,
    largest: int,
    kind: str | None,
    target_total_batch: int | None,
    world_size: int,
    notes: list[str],
) -> BatchPlan:
    if target_total_batch is None:
        per_device, steps = largest, 1
        notes = [*notes, "No target total batch: the per-device batch is the largest that fits."]
    else:
        per_device, steps = split_total_batch(target_total_batch, world_size, largest)
        if per_device < largest:
            notes = [
                *notes,
                f"{per_device} clips per device, of the {largest} that fit, reach the total of "
                f"{target_total_batch} exactly.",
            ]
    return BatchPlan(
        per_device_batch=per_device,
        accumulation_steps=steps,
        world_size=world_size,
        total_batch=per_device * steps * world_size,
        bytes_per_clip=bytes_per_clip,
        fixed_bytes=fixed_bytes,
        budget_bytes=budget_bytes,
        max_per_device_batch=largest,
        statistics_batch=_statistics_batch(kind, per_device, world_size),
        batch_statistics=kind,
        target_total_batch=target_total_batch,
        notes=notes + _norm_notes(kind, per_device, steps, world_size),
    )


def plan_from_estimate(
    estimate: MemoryEstimate,
    budget_bytes: int,
    *,
    batch_statistics: str | None,
    target_total_batch: int | None = None,
    world_size: int = 1,
) -> BatchPlan:
    """Turn a memory estimate into a :class:`BatchPlan` (see :func:`plan_batch`).

    ``batch_statistics`` is "bn", "sync_bn" or None, as :func:`batch_statistics` returns.
    """
    if world_size < 1:
        raise ValueError(f"world_size={world_size}: expected >= 1")
    largest = estimate.largest_batch(budget_bytes)
    if largest < 1:
        raise ValueError(
            f"a single clip needs {_gib(estimate.total_bytes(1))} "
            f"({_gib(estimate.bytes_per_clip)} per clip + {_gib(estimate.fixed_bytes)} fixed), "
            f"more than the budget of {_gib(budget_bytes)}; use smaller clips, bf16, or a "
            "larger device"
        )
    margins = (
        f"Fixed memory includes a {_gib(estimate.workspace_bytes)} workspace margin (CUDA "
        f"context, cuDNN/cuBLAS workspaces); activations get "
        f"{estimate.fragmentation_margin:.0%} extra for allocator fragmentation."
    )
    return _assemble(
        estimate.bytes_per_clip,
        estimate.fixed_bytes,
        budget_bytes,
        largest,
        batch_statistics,
        target_total_batch,
        world_size,
        [margins],
    )


def cuda_budget_bytes(device: int | None = None) -> int:
    """Total memory of the current (or given) CUDA device; a clear error without CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "budget_bytes=None asks to read the CUDA device's memory, but CUDA is not "
            "available here; give the per-device budget explicitly (e.g. 16 GiB = 16 * 2**30)"
        )
    index = torch.cuda.current_device() if device is None else device
    return torch.cuda.get_device_properties(index).total_memory


def plan_batch(
    model_kwargs: Mapping,
    num_frames: int,
    crop_size: int,
    dtype: str = "fp32",
    channels_last: bool = False,
    budget_bytes: int | None = None,
    target_total_batch: int | None = None,
    world_size: int = 1,
    *,
    optimizer: str = "sgd",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> BatchPlan:
    """Plan the per-device batch, accumulation and world size of a training run.

    Args:
        model_kwargs: ``create_model`` arguments: ``name``, ``norm``, ``norm_kwargs``,
            ``num_classes``, and model overrides flat or under ``overrides``.
        num_frames, crop_size: the training clip, num_frames x crop_size x crop_size.
        dtype: "fp32", "bf16" or "fp16" (autocast).
        channels_last: channels_last_3d memory format.
        budget_bytes: memory of one device; None reads it from the CUDA device (error on CPU).
        target_total_batch: clips per optimizer step to reach exactly (None: the largest
            per-device batch, no accumulation).
        world_size: number of devices.
        optimizer, workspace_bytes: see :func:`videogn.memory.estimate.estimate_memory`.

    Returns:
        a :class:`BatchPlan`; ``plan.describe()`` is the paragraph to log.
    """
    if budget_bytes is None:
        budget_bytes = cuda_budget_bytes()
    if num_frames < 1 or crop_size < 1:
        raise ValueError(f"num_frames={num_frames}, crop_size={crop_size}: expected >= 1")
    model = build_meta_model(model_kwargs)
    estimate = estimate_module_memory(
        model,
        (3, num_frames, crop_size, crop_size),
        dtype=dtype,
        channels_last=channels_last,
        optimizer=optimizer,
        workspace_bytes=workspace_bytes,
    )
    return plan_from_estimate(
        estimate,
        budget_bytes,
        batch_statistics=batch_statistics(model, model_kwargs.get("norm")),
        target_total_batch=target_total_batch,
        world_size=world_size,
    )
