"""How much memory a training step of a video model needs: per clip, and fixed.

The estimate runs one real step (forward, cross-entropy, backward) of the model built on the
meta device, where tensors have shapes and dtypes but no data, and follows every storage the
step creates and frees (:class:`~videogn.memory.tracking.AllocationTracker`). Running it at
two batch sizes splits the activation peak into a part per clip and a part that does not grow
with the batch. Parameters, gradients, optimizer state and buffers are counted from the model;
a stated workspace margin covers what the tracker cannot see (CUDA context, cuDNN/cuBLAS
workspaces) and a fragmentation margin covers the caching allocator's rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videogn.memory.tracking import AllocationTracker, AutocastEmulation
from videogn.models import create_model

GIB = 2**30
# CUDA context (~0.3-0.5 GiB, outside PyTorch's allocator) + cuDNN/cuBLAS workspaces.
DEFAULT_WORKSPACE_BYTES = 1 * GIB
# The caching allocator rounds blocks up and splits segments; set aside 5% of activations.
DEFAULT_FRAGMENTATION_MARGIN = 0.05
# Batches of the two simulated steps. Activations grow linearly with the batch, but small
# batch-independent spikes (autocast weight casts, weight gradients) can set the peak of a tiny
# batch; two batches of the size plans use give the slope where it matters.
SIMULATED_BATCHES = (4, 8)
# Optimizer state tensors per trainable parameter.
OPTIMIZER_STATES = {"sgd": 1, "sgd_no_momentum": 0, "adam": 2, "adamw": 2}
# dtype name -> autocast dtype (None: plain fp32 training).
DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "float32": None,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class StepMemory:
    """Bytes created by one simulated step at one batch size (parameters excluded)."""

    forward_held_bytes: int  # alive after forward: what autograd saved, plus the logits
    activation_peak_bytes: int  # peak over the step, parameter gradients left out
    peak_bytes: int  # peak over the step, parameter gradients included as they appear


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of a training (or inference) step as ``fixed + batch * per clip``.

    Attributes:
        bytes_per_clip: activation peak per clip over forward + backward.
        saved_bytes_per_clip: bytes held for backward at the end of forward, per clip.
        activation_constant_bytes: the part of the activation peak that does not grow with the
            batch (autocast copies of the weights, the loss).
        parameter_bytes, gradient_bytes, optimizer_bytes, buffer_bytes: model state.
        workspace_bytes: the stated margin for CUDA context and library workspaces.
        fragmentation_margin: fraction of activation bytes set aside for allocator slack.
    """

    bytes_per_clip: int
    saved_bytes_per_clip: int
    activation_constant_bytes: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    buffer_bytes: int
    workspace_bytes: int
    fragmentation_margin: float = DEFAULT_FRAGMENTATION_MARGIN

    @property
    def fixed_bytes(self) -> int:
        """Everything that does not grow with the batch, workspace margin included."""
        return (
            self.activation_constant_bytes
            + self.parameter_bytes
            + self.gradient_bytes
            + self.optimizer_bytes
            + self.buffer_bytes
            + self.workspace_bytes
        )

    def total_bytes(self, batch_size: int) -> int:
        """Planned device memory for ``batch_size`` clips, margins included."""
        per_clip = self.bytes_per_clip * (1 + self.fragmentation_margin)
        return self.fixed_bytes + math.ceil(batch_size * per_clip)

    def largest_batch(self, budget_bytes: int) -> int:
        """Most clips per device whose :meth:`total_bytes` fits ``budget_bytes`` (0: none)."""
        per_clip = self.bytes_per_clip * (1 + self.fragmentation_margin)
        if per_clip <= 0:
            raise ValueError("bytes_per_clip must be positive to size a batch")
        batch = max(0, int((budget_bytes - self.fixed_bytes) // per_clip))
        while batch > 0 and self.total_bytes(batch) > budget_bytes:  # float rounding guard
            batch -= 1
        return batch


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """Map "fp32" / "bf16" / "fp16" (or the long names) to the autocast dtype (None: fp32)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}': expected one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def build_meta_model(model_kwargs: Mapping) -> nn.Module:
    """Build ``create_model(**model_kwargs)`` on the meta device (no weights are allocated).

    ``model_kwargs`` holds ``name``, ``norm``, ``norm_kwargs``, ``num_classes`` and model
    overrides, either flat or under an ``overrides`` mapping; ``pretrained`` is ignored.
    sync_bn is built as bn: it holds the same memory per device and needs no process group.
    """
    kwargs = dict(model_kwargs)
    overrides = kwargs.pop("overrides", None) or {}
    kwargs.pop("pretrained", None)
    if kwargs.get("norm") == "sync_bn":
        kwargs["norm"] = "bn"
    try:
        with torch.device("meta"):
            return create_model(**kwargs, **overrides)
    except TypeError as e:
        raise TypeError(f"model_kwargs {dict(model_kwargs)} do not build a model: {e}") from e


def simulate_step(
    model: nn.Module,
    batch_size: int,
    clip_shape: tuple[int, ...],
    *,
    dtype: str = "fp32",
    channels_last: bool = False,
    train: bool = True,
    autocast_policy: str = "cuda",
) -> StepMemory:
    """Run one step of ``model`` (on meta) at ``batch_size`` and account its memory.

    Args:
        model: a model on the meta device, mapping [N, *clip_shape] to logits [N, K].
        clip_shape: (C, T, H, W) of one clip.
        dtype: "fp32", or "bf16"/"fp16" for autocast with ``autocast_policy``'s op lists.
        channels_last: use channels_last_3d for the model and the clip.
        train: forward + loss + backward in train mode; else a no-grad forward in eval mode.
    """
    low_dtype = autocast_dtype(dtype)
    model.train(train)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    state = list(model.parameters()) + list(model.buffers())
    tracker = AllocationTracker(untracked=state)
    try:
        with tracker:
            clip = torch.empty((batch_size, *clip_shape), device="meta")
            if channels_last:
                clip = clip.contiguous(memory_format=torch.channels_last_3d)
            autocast = AutocastEmulation(low_dtype, autocast_policy) if low_dtype else None
            with torch.set_grad_enabled(train), autocast or nullcontext():
                logits = model(clip)
                forward_held = tracker.live_bytes()
                if train:
                    labels = torch.zeros(batch_size, dtype=torch.long, device="meta")
                    loss = F.cross_entropy(logits, labels)
            del logits, clip
            if train:
                loss.backward()
                del loss
        grads = tracker.allocation_ids(p.grad for p in model.parameters() if p.grad is not None)
        return StepMemory(forward_held, tracker.peak_bytes(exclude=grads), tracker.peak_bytes())
    finally:
        tracker.close()
        for p in model.parameters():
            p.grad = None


def _state_bytes(model: nn.Module) -> tuple[int, int, int]:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params, trainable, buffers


def estimate_module_memory(
    model: nn.Module,
    clip_shape: tuple[int, ...],
    *,
    dtype: str = "fp32",
    channels_last: bool = False,
    train: bool = True,
    optimizer: str = "sgd",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    fragmentation_margin: float = DEFAULT_FRAGMENTATION_MARGIN,
    autocast_policy: str = "cuda",
) -> MemoryEstimate:
    """Estimate a meta ``model``'s step memory from two simulated steps (``SIMULATED_BATCHES``).

    Args: as :func:`simulate_step`, plus
        optimizer: a key of ``OPTIMIZER_STATES`` (state tensors per parameter).
        workspace_bytes, fragmentation_margin: the stated margins, see the module docstring.
    """
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer '{optimizer}': expected one of {', '.join(OPTIMIZER_STATES)}")
    small, large = SIMULATED_BATCHES
    steps = [
        simulate_step(
            model,
            batch,
            clip_shape,
            dtype=dtype,
            channels_last=channels_last,
            train=train,
            autocast_policy=autocast_policy,
        )
        for batch in SIMULATED_BATCHES
    ]
    per_clip = (steps[1].activation_peak_bytes - steps[0].activation_peak_bytes) // (large - small)
    saved_per_clip = (steps[1].forward_held_bytes - steps[0].forward_held_bytes) // (large - small)
    params, trainable, buffers = _state_bytes(model)
    trained = trainable if train else 0
    return MemoryEstimate(
        bytes_per_clip=per_clip,
        saved_bytes_per_clip=saved_per_clip,
        activation_constant_bytes=max(0, steps[0].activation_peak_bytes - small * per_clip),
        parameter_bytes=params,
        gradient_bytes=trained,
        optimizer_bytes=trained * OPTIMIZER_STATES[optimizer],
        buffer_bytes=buffers,
        workspace_bytes=workspace_bytes,
        fragmentation_margin=fragmentation_margin,
    )


def estimate_memory(
    model_kwargs: Mapping,
    *,
    num_frames: int,
    crop_size: int,
    dtype: str = "fp32",
    channels_last: bool = False,
    train: bool = True,
    optimizer: str = "sgd",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    fragmentation_margin: float = DEFAULT_FRAGMENTATION_MARGIN,
    autocast_policy: str = "cuda",
) -> MemoryEstimate:
    """Estimate the memory of training ``create_model(**model_kwargs)`` on T×crop×crop clips.

    Example: ``estimate_memory({"name": "i3d_r50", "norm": "gn"}, num_frames=32,
    crop_size=224, dtype="bf16")``; takes about a second on a CPU, allocates nothing.
    ``autocast_policy`` ("cuda" or "cpu") picks whose autocast op lists bf16/fp16 follow.
    """
    if num_frames < 1 or crop_size < 1:
        raise ValueError(f"num_frames={num_frames}, crop_size={crop_size}: expected >= 1")
    model = build_meta_model(model_kwargs)
    return estimate_module_memory(
        model,
        (3, num_frames, crop_size, crop_size),
        dtype=dtype,
        channels_last=channels_last,
        train=train,
        optimizer=optimizer,
        workspace_bytes=workspace_bytes,
        fragmentation_margin=fragmentation_margin,
        autocast_policy=autocast_policy,
    )
