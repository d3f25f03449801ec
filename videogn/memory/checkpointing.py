"""Activation checkpointing in the planner: parse the setting, price it, choose it.

- :func:`parse_activation_checkpointing`: ``none`` / ``all`` / a list of stages / ``auto`` ->
  a tuple of stage names, or ``"auto"``;
- :func:`recompute_overhead`: the extra compute of a training step with some stages
  checkpointed, from FLOP counts of real (meta) steps with and without;
- :func:`choose_checkpointing` (``auto``): the fewest stages with which ``batch_size`` clips
  fit the budget, best-by-estimate: each stage's saving is estimated on its own, stages are
  taken largest saving first, and the chosen set is estimated once more as a whole. (Not
  shallowest-first: for I3D-R50 at 32x224 checkpointing res2 saves 0.168 GiB per clip for
  8% more compute, the stem 0.108 GiB for 10%.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from videogn.memory.estimate import GIB, MemoryEstimate, build_meta_model, estimate_memory
from videogn.models.i3d import CHECKPOINT_STAGES

AUTO = "auto"


def parse_activation_checkpointing(
    value: str | Sequence[str] | None, key: str = "trainer.activation_checkpointing"
) -> tuple[str, ...] | str:
    """``none``/None -> (), ``all`` -> every stage, ``auto`` -> "auto", a list -> its stages.

    Raises:
        ValueError: naming ``key``, the bad value and what is expected.
    """
    expected = f"'none', 'all', 'auto' or a list of stages from {list(CHECKPOINT_STAGES)}"
    if value is None or value == "none":
        return ()
    if value == "all":
        return CHECKPOINT_STAGES
    if value == AUTO:
        return AUTO
    if isinstance(value, str) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"{key}={value!r}: expected {expected}")
    unknown = [s for s in value if s not in CHECKPOINT_STAGES]
    if unknown:
        raise ValueError(f"{key}={list(value)!r}: unknown stage(s) {unknown}; expected {expected}")
    return tuple(s for s in CHECKPOINT_STAGES if s in value)


def _step_flops(model_kwargs: Mapping, clip_shape: tuple[int, ...], stages) -> int:
    # The model reads "all"/"none" and lists alike.
    model = build_meta_model(dict(model_kwargs) | {"activation_checkpointing": stages})
    model.train()
    with FlopCounterMode(display=False) as counter:
        # Two clips: BN refuses one when the last stage is 1x1x1 (toy models).
        clip = torch.empty((2, *clip_shape), device="meta")
        loss = F.cross_entropy(model(clip), torch.zeros(2, dtype=torch.long, device="meta"))
        loss.backward()
    return counter.get_total_flops()


def recompute_overhead(
    model_kwargs: Mapping, num_frames: int, crop_size: int, stages: Sequence[str] | str
) -> float:
    """Extra FLOPs of a training step (forward + backward) with ``stages`` (names, "all" or
    "none") checkpointed, as a fraction of the plain step's: the recomputed forwards
    (convolutions and linear layers)."""
    if not stages or stages == "none":
        return 0.0
    clip_shape = (3, num_frames, crop_size, crop_size)
    plain = _step_flops(model_kwargs, clip_shape, ())
    return _step_flops(model_kwargs, clip_shape, stages) / plain - 1


@dataclass(frozen=True)
class CheckpointChoice:
    """What ``auto`` chose, and why."""

    stages: tuple[str, ...]
    estimate: MemoryEstimate
    batch_size: int
    budget_bytes: int

    def describe(self) -> str:
        chosen = ", ".join(self.stages) or "none"
        return (
            f"Activation checkpointing (auto: fewest stages, largest estimated saving first): "
            f"{chosen}. "
            f"{self.batch_size} clips need {self.estimate.total_bytes(self.batch_size) / GIB:.2f} "
            f"GiB of a {self.budget_bytes / GIB:.2f} GiB budget."
        )


def _estimate(model_kwargs: Mapping, stages: Sequence[str], **kwargs) -> MemoryEstimate:
    return estimate_memory(
        dict(model_kwargs) | {"activation_checkpointing": tuple(stages)}, **kwargs
    )


def choose_checkpointing(
    model_kwargs: Mapping,
    num_frames: int,
    crop_size: int,
    *,
    batch_size: int,
    budget_bytes: int,
    **estimate_kwargs,
) -> CheckpointChoice:
    """The fewest stages, largest estimated saving first, that let ``batch_size`` clips fit.

    ``estimate_kwargs`` go to :func:`videogn.memory.estimate.estimate_memory` (dtype,
    channels_last, optimizer, ...).

    Raises:
        ValueError: when even checkpointing every stage does not fit; says what would.
    """
    if batch_size < 1:
        raise ValueError(f"activation checkpointing auto: batch_size={batch_size}, expected >= 1")
    kwargs = dict(num_frames=num_frames, crop_size=crop_size, **estimate_kwargs)
    plain = _estimate(model_kwargs, (), **kwargs)
    if plain.total_bytes(batch_size) <= budget_bytes:
        return CheckpointChoice((), plain, batch_size, budget_bytes)
    saving = {
        stage: plain.bytes_per_clip - _estimate(model_kwargs, (stage,), **kwargs).bytes_per_clip
        for stage in CHECKPOINT_STAGES
    }
    order = sorted(CHECKPOINT_STAGES, key=lambda stage: -saving[stage])
    for count in range(1, len(order) + 1):
        stages = tuple(s for s in CHECKPOINT_STAGES if s in order[:count])
        estimate = _estimate(model_kwargs, stages, **kwargs)
        if estimate.total_bytes(batch_size) <= budget_bytes:
            return CheckpointChoice(stages, estimate, batch_size, budget_bytes)
    raise ValueError(
        f"activation checkpointing auto: {batch_size} clips of {num_frames}x{crop_size} do not "
        f"fit {budget_bytes / GIB:.2f} GiB even with every stage checkpointed "
        f"({estimate.total_bytes(batch_size) / GIB:.2f} GiB needed); at most "
        f"{estimate.largest_batch(budget_bytes)} fit"
    )
