"""The ``optim`` group -> an :class:`OptimSpec`: SGD settings and the step schedule in epochs,
which become an optimizer and a schedule once the total batch and epoch length are known."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from videogn.engine.optim import StepWarmupSchedule, build_sgd, scaled_lr


@dataclass(frozen=True)
class OptimSpec:
    """SGD and its schedule (see ``videogn.config.OptimConfig`` for each field)."""

    base_lr: float
    base_batch_size: int
    momentum: float
    nesterov: bool
    weight_decay: float
    norm_weight_decay: float
    weight_decay_bias: bool
    epochs: float
    lr_steps: tuple[float, ...]
    lr_gamma: float
    warmup_epochs: float
    warmup_start_factor: float

    def optimizer(self, model: nn.Module, total_batch: int) -> torch.optim.SGD:
        """SGD at the lr scaled linearly to ``total_batch`` clips per step."""
        return build_sgd(
            model,
            scaled_lr(self.base_lr, total_batch, self.base_batch_size),
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
            norm_weight_decay=self.norm_weight_decay,
            decay_bias=self.weight_decay_bias,
        )

    def schedule(self, iterations_per_epoch: int) -> StepWarmupSchedule:
        """The step schedule over ``epochs`` epochs of ``iterations_per_epoch`` iterations."""
        total = math.ceil(self.epochs * iterations_per_epoch)
        if total < 1:
            raise ValueError(
                f"optim.epochs={self.epochs} gives no iteration "
                f"({iterations_per_epoch} iterations per epoch)"
            )
        return StepWarmupSchedule(
            total_iterations=total,
            step_fractions=self.lr_steps,
            gamma=self.lr_gamma,
            warmup_iterations=round(self.warmup_epochs * iterations_per_epoch),
            warmup_start_factor=self.warmup_start_factor,
        )


def build_optim(optim_cfg: DictConfig) -> OptimSpec:
    """The ``optim`` group as an :class:`OptimSpec`."""
    o = optim_cfg
    return OptimSpec(
        base_lr=o.base_lr,
        base_batch_size=o.base_batch_size,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
        norm_weight_decay=o.norm_weight_decay,
        weight_decay_bias=o.weight_decay_bias,
        epochs=o.epochs,
        lr_steps=tuple(o.lr_steps),
        lr_gamma=o.lr_gamma,
        warmup_epochs=o.warmup_epochs,
        warmup_start_factor=o.warmup_start_factor,
    )
