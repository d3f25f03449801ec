"""Precise BN: replace BN running averages with population statistics over a number of batches.

The running statistics that BN accumulates during training lag behind the weights (they
average over weights from many iterations ago). Recomputing them with the final weights before
evaluating or saving gives the statistics the evaluated model actually produces.

What is computed, per BN layer and channel, from the layer's input x_b in batch b (n_b values
per channel: clips x T x H x W), mean μ_b and biased variance σ²_b:

    mean = Σ_b n_b μ_b / Σ_b n_b                       (= E_b[μ_b] for equal batches)
    var  = Σ_b n_b (σ²_b + μ²_b) / Σ_b n_b − mean²     (= E_b[σ²_b + μ²_b] − mean²)

summed over the batches and then over the DDP ranks: the exact mean and variance of the
concatenation of every batch on every rank, as the Non-local code's bn_helper (and PySlowFast)
compute them. Averaging the batches' own variances instead, as torch's running average does,
leaves out the variance *between* batch means, which grows as the batch shrinks: the 4 clips
per GPU of Table 8.

No Bessel correction: ``var`` divides by the number of values, Σ n_b. With 200 batches of
4 clips the smallest layer (res5, 4x7x7 positions) has 156,800 values per channel, so
M/(M-1) differs from 1 by less than 1e-5; the Non-local code applies none, and BN in training
normalizes with the biased batch variance too, so the test-time statistic matches it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

from videogn.engine import distributed
from videogn.models.norm import BATCH_NORM_TYPES, has_batch_norm

logger = logging.getLogger(__name__)


class _InputMoments:
    """A forward pre-hook summing one BN layer's per-channel input moments over batches:
    Σ n_b μ_b, Σ n_b (σ²_b + μ²_b) and Σ n_b, in float64 (exact for the 1e5-1e8 values)."""

    def __init__(self, bn: nn.Module):
        options = {"dtype": torch.float64, "device": bn.running_mean.device}
        self.sums = torch.zeros(2 * bn.num_features + 1, **options)

    def __call__(self, bn: nn.Module, inputs: tuple) -> None:
        x = inputs[0]
        dims = [d for d in range(x.ndim) if d != 1]  # all but the channels
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        mean, var = mean.double(), var.double()
        count = x.numel() // x.shape[1]
        channels = bn.num_features
        self.sums[:channels] += count * mean
        self.sums[channels:-1] += count * (var + mean * mean)
        self.sums[-1] += count


def _population_stats(sums: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) per channel from the summed moments of one layer."""
    count = sums[-1]
    mean = sums[:channels] / count
    var = sums[channels:-1] / count - mean * mean
    return mean, var.clamp_(min=0.0)  # float64 cancellation can leave -1e-17 on a constant


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    num_batches: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Set every BN layer's running mean/var to the population statistics of its inputs over
    ``num_batches`` batches (on every rank), the model in training mode.

    Args:
        model: the bare model (not the DDP wrapper, whose forward would broadcast buffers).
        batches: yields input tensors ready for ``forward``.
        num_batches: how many batches to use (per rank).
        forward: how to run the model on a batch (default ``model(x)``); lets the caller
            apply autocast or a memory format.

    Returns:
        the number of batches used on this rank (0 when the model has no BN).

    Collective under DDP: every rank must call it. Every rank (and the checkpoint) then holds
    the same statistics. The torch RNG state is restored afterwards, so dropout draws here do
    not change the training run.
    """
    if not has_batch_norm(model):
        logger.info("precise BN: skipped, the model has no BatchNorm layer (nothing to update)")
        return 0
    bn_layers = [m for m in model.modules() if isinstance(m, BATCH_NORM_TYPES)]
    moments = [_InputMoments(bn) for bn in bn_layers]
    handles = [bn.register_forward_pre_hook(m) for bn, m in zip(bn_layers, moments, strict=True)]
    momenta = [bn.momentum for bn in bn_layers]
    was_training = model.training
    used = 0
    try:
        for bn in bn_layers:
            bn.momentum = 0.0  # the forwards leave the running stats alone; we set them below
        model.train()  # each BN normalizes with its batch, so later layers see training inputs
        forward = forward or model
        cuda_devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda_devices):
            for inputs in batches:
                if used >= num_batches:
                    break
                forward(inputs)
                used += 1
    finally:
        for handle in handles:
            handle.remove()
        for bn, momentum in zip(bn_layers, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    # One all-reduce for all layers: sums of moments and counts add up across ranks.
    totals = distributed.all_reduce_sum(torch.cat([m.sums for m in moments]))
    for bn, sums in zip(bn_layers, totals.split([len(m.sums) for m in moments]), strict=True):
        if sums[-1] == 0:  # no batch on any rank, or a layer the forward never reached
            logger.warning("precise BN: no input reached a %s; its statistics are kept", bn)
            continue
        mean, var = _population_stats(sums, bn.num_features)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    if used < num_batches:
        logger.warning("precise BN: only %d of %d batches were available", used, num_batches)
    logger.info("precise BN: population statistics of %d BN layers over %d batches per rank",
                len(bn_layers), used)  # fmt: skip
    return used
