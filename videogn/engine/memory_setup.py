"""``trainer.activation_checkpointing`` and the planner's memory of a run, from its config.

The builders call :func:`resolve_checkpointing` once the per-process batch is known and set
the result on the model (``model.set_activation_checkpointing``); the Table 8 report calls
:func:`planned_memory` for each cell. Both turn the config into plain arguments here, so that
neither the model nor the memory planner sees a config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from videogn.config import enum_value
from videogn.engine.builders.model import build_model_spec
from videogn.memory.checkpointing import (
    AUTO,
    choose_checkpointing,
    parse_activation_checkpointing,
    recompute_overhead,
)
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


def _planner_arguments(cfg: DictConfig) -> dict:
    amp = enum_value(cfg.trainer.amp)
    return dict(
        num_frames=cfg.sampler.num_frames,
        crop_size=cfg.data.crop_size,
        dtype="fp32" if amp in (None, "none") else amp,
        channels_last=bool(cfg.trainer.channels_last_3d),
    )


def _budget_bytes(cfg: DictConfig) -> int:
    budget = cfg.data.memory_budget_gb
    if budget is not None:
        return int(budget * GIB)
    if not torch.cuda.is_available():
        raise ValueError(
            f"{KEY}=auto needs data.memory_budget_gb (GiB per device) when no CUDA device "
            "is there to ask"
        )
    return cuda_budget_bytes()


def resolve_checkpointing(cfg: DictConfig, batch_size: int, *, estimate: bool = False) -> RunMemory:
    """The stages to checkpoint for ``batch_size`` clips per process, from ``cfg``.

    ``auto`` estimates (that is how it chooses); other settings are estimated only when
    ``estimate`` is true (the report's planned memory per GPU).

    Raises:
        ValueError: a bad setting (naming the key), or ``auto`` with nothing that fits.
    """
    setting = parse_activation_checkpointing(
        cfg.trainer.get("activation_checkpointing", "none"), KEY
    )
    kwargs = build_model_spec(cfg.model, cfg.norm).kwargs
    planner = _planner_arguments(cfg)
    if setting == AUTO:
        choice = choose_checkpointing(
            kwargs, batch_size=batch_size, budget_bytes=_budget_bytes(cfg), **planner
        )
        stages, policy, estimated = choice.stages, AUTO, choice.estimate
    else:
        stages, policy, estimated = setting, "given" if setting else "none", None
        if estimate:
            estimated = estimate_memory(kwargs | {"activation_checkpointing": stages}, **planner)
    extra = None
    if estimated is not None:
        extra = recompute_overhead(kwargs, planner["num_frames"], planner["crop_size"], stages)
    return RunMemory(stages, policy, estimated, batch_size, extra)


def apply_activation_checkpointing(cfg: DictConfig, model: nn.Module, batch_size: int) -> RunMemory:
    """Resolve ``trainer.activation_checkpointing`` for ``batch_size`` clips per process, set it
    on ``model`` (bare or DDP-wrapped) and log what was chosen."""
    memory = resolve_checkpointing(cfg, batch_size)
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
