"""Precise BN: replace BN running averages with exact averages over a number of batches.

The running statistics that BN accumulates during training lag behind the weights (they
average over weights from many iterations ago). Recomputing them with the final weights before
evaluating or saving gives the statistics the evaluated model actually produces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

from videogn.engine import distributed
from videogn.models.norm import BATCH_NORM_TYPES, has_batch_norm

logger = logging.getLogger(__name__)


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    num_batches: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Recompute every BN layer's running mean/var as the average over ``num_batches`` batches.

    Args:
        model: the bare model (not the DDP wrapper, whose forward would broadcast buffers).
        batches: yields input tensors ready for ``forward``.
        num_batches: how many batches to average over.
        forward: how to run the model on a batch (default ``model(x)``); lets the caller
            apply autocast or a memory format.

    Returns:
        the number of batches used (0 when the model has no BN: nothing to recompute).

    Under DDP each process computes its own averages, then they are averaged over processes
    so every rank (and the checkpoint) holds the same statistics. The torch RNG state is
    restored afterwards, so dropout draws here do not change the training run.
    """
    if not has_batch_norm(model):
        logger.info("precise BN: skipped, the model has no BatchNorm layer (nothing to update)")
        return 0
    bn_layers = [m for m in model.modules() if isinstance(m, BATCH_NORM_TYPES)]
    momenta = [bn.momentum for bn in bn_layers]
    was_training = model.training
    for bn in bn_layers:
        bn.reset_running_stats()
        bn.momentum = None  # None: running stats become the cumulative (equal-weight) average
    forward = forward or model
    model.train()
    used = 0
    cuda_devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda_devices):
        for inputs in batches:
            if used >= num_batches:
                break
            forward(inputs)
            used += 1
    for bn, momentum in zip(bn_layers, momenta, strict=True):
        bn.momentum = momentum
        bn.running_mean.copy_(distributed.all_reduce_mean(bn.running_mean))
        bn.running_var.copy_(distributed.all_reduce_mean(bn.running_var))
    model.train(was_training)
    if used < num_batches:
        logger.warning("precise BN: only %d of %d batches were available", used, num_batches)
    logger.info("precise BN: recomputed %d BN layers over %d batches", len(bn_layers), used)
    return used
