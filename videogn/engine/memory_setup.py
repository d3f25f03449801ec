"""``trainer.activation_checkpointing`` and the planner's memory of a run.

:func:`apply_activation_checkpointing` (called by ``build_trainer`` once the per-process batch
is known) resolves the setting, ``auto`` included, and sets it on the model; the Table 8 report
calls :func:`config_memory` for each cell. Both reduce to :func:`plan_run_memory`, which takes
plain values, so that neither the model nor the memory planner sees a config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from videogn.engine.builders.model import build_model_spec
from videogn.engine.builders.trainer import build_trainer_spec
from videogn.memory.checkpointing import AUTO, choose_checkpointing, recompute_overhead
from videogn.memory.estimate import GIB, MemoryEstimate, estimate_memory
from videogn.memory.plan import cuda_budget_bytes

KEY = "trainer.activation_checkpointing"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunMemory:
    """The checkpointed stages of a run and, when estimated, its planned memory per GPU."""

    stages: tuple[str, ...]
    policy: str  # "none", "given" or "auto"
    estimate: MemoryEstimate | None = None
    batch_size: int = 0
    extra_compute: float | None = None

    @property
    def bytes_per_gpu(self) -> int | None:
        return None if self.estimate is None else self.estimate.total_bytes(self.batch_size)

    def describe(self) -> str:
        stages = ", ".join(self.stages) or "none"
        text = f"Activation checkpointing ({self.policy}): {stages}."
        if self.policy == AUTO:
            text = (
                f"Activation checkpointing (auto: the fewest stages, largest estimated saving "
                f"first, that fit data.batch_size in data.memory_budget_gb): {stages}."
            )
        if self.bytes_per_gpu is not None:
            text += f" Planned memory: {self.bytes_per_gpu / GIB:.2f} GiB per GPU"
            text += f" for {self.batch_size} clips"
            if self.extra_compute:
                text += f", {self.extra_compute:+.0%} compute per step"
            text += "."
        return text


def _budget_bytes(budget_gb: float | None) -> int:
    if budget_gb is not None:
        return int(budget_gb * GIB)
    if not torch.cuda.is_available():
        raise ValueError(
            f"{KEY}=auto needs data.memory_budget_gb (GiB per device) when no CUDA device "
            "is there to ask"
        )
    return cuda_budget_bytes()


def plan_run_memory(
    model_kwargs: Mapping,
    setting: tuple[str, ...] | str,
    batch_size: int,
    *,
    num_frames: int,
    crop_size: int,
    amp: str,
    channels_last: bool,
    budget_gb: float | None,
    estimate: bool = False,
) -> RunMemory:
    """The stages to checkpoint for ``batch_size`` clips per process.

    ``setting`` is parsed (:func:`videogn.memory.checkpointing.parse_activation_checkpointing`);
    ``auto`` estimates (that is how it chooses), other settings only when ``estimate``.

    Raises:
        ValueError: ``auto`` with no budget to fit, or with nothing that fits.
    """
    planner = dict(
        num_frames=num_frames,
        crop_size=crop_size,
        dtype="fp32" if amp in (None, "none") else amp,
        channels_last=channels_last,
    )
    kwargs = dict(model_kwargs)
    if setting == AUTO:
        budget = _budget_bytes(budget_gb)
        choice = choose_checkpointing(kwargs, batch_size=batch_size, budget_bytes=budget, **planner)
        stages, policy, estimated = choice.stages, AUTO, choice.estimate
    else:
        stages, policy, estimated = tuple(setting), "given" if setting else "none", None
        if estimate:
            estimated = estimate_memory(kwargs | {"activation_checkpointing": stages}, **planner)
    extra = None
    if estimated is not None:
        extra = recompute_overhead(kwargs, num_frames, crop_size, stages)
    return RunMemory(stages, policy, estimated, batch_size, extra)


def config_memory(cfg: DictConfig, batch_size: int, *, estimate: bool = True) -> RunMemory:
    """:func:`plan_run_memory` of a composed or recorded training config (its group builders)."""
    trainer = build_trainer_spec(cfg.trainer)
    return plan_run_memory(
        build_model_spec(cfg.model, cfg.norm).kwargs,
        trainer.activation_checkpointing,
        batch_size,
        num_frames=cfg.sampler.num_frames,
        crop_size=cfg.data.crop_size,
        amp=trainer.amp,
        channels_last=trainer.channels_last_3d,
        budget_gb=cfg.data.memory_budget_gb,
        estimate=estimate,
    )


def apply_activation_checkpointing(spec, model: nn.Module, batch_size: int) -> RunMemory:
    """Resolve the run's activation checkpointing for ``batch_size`` clips per process, set it
    on ``model`` (bare or DDP-wrapped) and log what was chosen. ``spec``: a ``RunSpec``."""
    memory = plan_run_memory(
        spec.model.kwargs,
        spec.trainer.activation_checkpointing,
        batch_size,
        num_frames=spec.samplers.train.num_frames,
        crop_size=spec.data.train_transform.crop_size,
        amp=spec.trainer.amp,
        channels_last=spec.trainer.channels_last_3d,
        budget_gb=spec.data.batch.memory_budget_gb,
    )
    bare = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not hasattr(bare, "set_activation_checkpointing"):
        if memory.stages:
            raise ValueError(
                f"{KEY}: {type(bare).__name__} has no activation checkpointing; use 'none'"
            )
        return memory
    bare.set_activation_checkpointing(memory.stages)
    logger.info(memory.describe())
    return memory
