"""The ``trainer`` group -> a :class:`TrainerSpec`: how the loop runs, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from videogn.config import enum_value
from videogn.memory.checkpointing import parse_activation_checkpointing

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainerSpec:
    """How the loop runs (see ``videogn.config.TrainerConfig`` for each field)."""

    amp: str = "none"
    channels_last_3d: bool = False
    accumulation_steps: int = 1
    precise_bn_batches: int = 0  # 0: precise BN off
    checkpoint_period: int = 0
    keep_checkpoints: int = 2
    log_period: int = 20
    progress_bar: bool = True
    num_threads: int | None = None
    resume: str = "auto"
    test_at_end: bool = True
    max_iterations: int | None = None
    val_period: int = 0  # 0: no periodic validation
    val_period_epochs: float | None = None  # the period in epochs, instead of val_period
    val_videos: int | None = None
    cudnn_benchmark: bool = True
    tf32: bool = False
    collective_timeout_s: float = 1800.0
    max_requeues: int = 10
    # Stages to recompute in backward, or "auto" (resolved once the batch is known).
    activation_checkpointing: tuple[str, ...] | str = ()

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp]

    def validation_period(self, iterations_per_epoch: int) -> int:
        """Iterations between validation points (0: none): ``val_period`` when it is set (a
        command-line ``trainer.val_period=N`` wins), else ``val_period_epochs`` epochs."""
        if self.val_period != 0 or self.val_period_epochs is None:
            return self.val_period
        return max(1, round(self.val_period_epochs * iterations_per_epoch))


def build_trainer_spec(trainer_cfg: DictConfig) -> TrainerSpec:
    """The ``trainer`` group as a :class:`TrainerSpec`."""
    t = trainer_cfg
    if t.accumulation_steps < 1:
        raise ValueError(f"trainer.accumulation_steps must be >= 1, got {t.accumulation_steps}")
    if t.collective_timeout_s <= 0 or t.max_requeues < 0:
        raise ValueError(
            "trainer.collective_timeout_s must be > 0 and trainer.max_requeues >= 0, got "
            f"{t.collective_timeout_s} and {t.max_requeues}"
        )
    if t.val_period_epochs is not None and not t.val_period_epochs > 0:
        raise ValueError(
            f"trainer.val_period_epochs must be > 0 or null (off), got {t.val_period_epochs}"
        )
    return TrainerSpec(
        amp=enum_value(t.amp),
        channels_last_3d=t.channels_last_3d,
        accumulation_steps=t.accumulation_steps,
        precise_bn_batches=t.precise_bn.num_batches if t.precise_bn.enabled else 0,
        checkpoint_period=t.checkpoint_period,
        keep_checkpoints=t.keep_checkpoints,
        log_period=t.log_period,
        progress_bar=t.progress_bar,
        num_threads=t.num_threads,
        resume=t.resume,
        test_at_end=t.test_at_end,
        max_iterations=t.max_iterations,
        val_period=t.val_period,
        val_period_epochs=t.val_period_epochs,
        val_videos=t.val_videos,
        cudnn_benchmark=t.cudnn_benchmark,
        tf32=t.tf32,
        collective_timeout_s=t.collective_timeout_s,
        max_requeues=t.max_requeues,
        activation_checkpointing=parse_activation_checkpointing(
            t.get("activation_checkpointing", "none")
        ),
    )
