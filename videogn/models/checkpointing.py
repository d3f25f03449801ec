"""Exact activation checkpointing: keep a segment's input, recompute the rest in backward.

:func:`run_checkpointed` wraps ``torch.utils.checkpoint`` (non-reentrant) with the two things
that make the recomputation exact for a training step:

- the RNG state (dropout) is restored before recomputing, so the same elements drop;
- BatchNorm recomputes with the same batch statistics but does *not* update its running mean
  and variance a second time: they are put back as they were after the recomputation (a
  recomputation that ran without running statistics would save other tensors than the first
  forward, which torch.utils.checkpoint refuses).

Autocast state is restored by ``torch.utils.checkpoint`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from videogn.models.autocast import emulation_for_recompute
from videogn.models.norm import BATCH_NORM_TYPES


@contextmanager
def running_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` run as usual (batch statistics in train mode, the same
    saved tensors), and their running statistics and step counters are put back afterwards,
    bit for bit: a recomputation must not apply the momentum update a second time."""
    buffers = [
        b
        for m in module.modules()
        if isinstance(m, BATCH_NORM_TYPES) and m.track_running_stats
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]
    kept = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, kept, strict=True):
                buffer.copy_(value)


@contextmanager
def _recomputation(module: nn.Module, emulation: AbstractContextManager) -> Iterator[None]:
    with running_statistics_frozen(module), emulation:
        yield


def _contexts(module: nn.Module):
    # (context of the first forward, context of the recomputation in backward). The memory
    # estimator's autocast emulation, if in force now, is put back for the recomputation.
    return nullcontext(), _recomputation(module, emulation_for_recompute())


def run_checkpointed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, keeping only ``x`` for backward and recomputing the rest exactly."""
    return checkpoint(
        module,
        x,
        use_reentrant=False,
        # Meta tensors (the memory estimator) have no RNG state to save.
        preserve_rng_state=x.device.type != "meta",
        context_fn=partial(_contexts, module),
    )
