"""SGD with the Non-local I3D recipe and its step learning-rate schedule.

The recipe (Wang et al. 2018; GN paper Table 8): Nesterov SGD, momentum 0.9, weight decay
1e-4 on every weight and bias but the norms' γ/β (``optim.norm_weight_decay``, 0 by default:
see docs/EXPERIMENTS.md), base lr 0.01 for 64 clips scaled linearly with the total batch,
lr x0.1 at 150k and 300k of 400k iterations. The schedule here is expressed in fractions of
the run (0.375, 0.75) and its length in epochs, so it follows the batch size and the dataset
size; it is updated every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def scaled_lr(base_lr: float, total_batch: int, base_batch_size: int) -> float:
    """Linear scaling rule: ``base_lr`` is for ``base_batch_size`` clips per step."""
    return base_lr * total_batch / base_batch_size


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    norm_weight_decay: float = 0.0,
    decay_bias: bool = False,
) -> list[dict]:
    """Split parameters into groups by their weight decay.

    Norm-layer weights/biases (γ/β: any 1-D parameter of a module without a conv/linear
    weight) get ``norm_weight_decay``; other biases (conv, linear) ``weight_decay`` if
    ``decay_bias``, else none; every other weight ``weight_decay``. Groups of equal decay merge.
    """
    by_decay: dict[float, list] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = not isinstance(module, (nn.Conv3d, nn.Conv2d, nn.Conv1d, nn.Linear))
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if is_norm and param.dim() == 1:
                decay = norm_weight_decay
            elif name == "bias":
                decay = weight_decay if decay_bias else 0.0
            else:
                decay = weight_decay
            by_decay.setdefault(float(decay), []).append(param)
    return [{"params": params, "weight_decay": decay} for decay, params in by_decay.items()]


def build_sgd(
    model: nn.Module,
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 1e-4,
    norm_weight_decay: float = 0.0,
    decay_bias: bool = False,
) -> torch.optim.SGD:
    groups = param_groups(
        model, weight_decay, norm_weight_decay=norm_weight_decay, decay_bias=decay_bias
    )
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


@dataclass
class StepWarmupSchedule:
    """lr multiplier at an iteration: linear warmup, then x``gamma`` at each step.

    A plain picklable object, so ``LambdaLR.state_dict`` records it with the checkpoint.

    Args:
        total_iterations: length of the run.
        step_fractions: fractions of ``total_iterations`` where the lr is multiplied by gamma.
        gamma: the factor applied at each step.
        warmup_iterations: iterations of linear warmup from ``warmup_start_factor`` to 1.
    """

    total_iterations: int
    step_fractions: Sequence[float] = (0.375, 0.75)
    gamma: float = 0.1
    warmup_iterations: int = 0
    warmup_start_factor: float = 0.1

    def __post_init__(self):
        if any(not 0 < f < 1 for f in self.step_fractions):
            raise ValueError(f"lr step fractions must lie in (0, 1), got {self.step_fractions}")
        self.step_iterations = [math.ceil(f * self.total_iterations) for f in self.step_fractions]

    def __call__(self, iteration: int) -> float:
        factor = self.gamma ** sum(iteration >= s for s in self.step_iterations)
        if iteration < self.warmup_iterations:
            alpha = iteration / self.warmup_iterations
            factor *= self.warmup_start_factor * (1 - alpha) + alpha
        return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: StepWarmupSchedule
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler: call ``step()`` after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
