"""Guards of a long run: preemption signals and non-finite losses."""

from __future__ import annotations

import contextlib
import logging
import signal
from functools import partial
from types import FrameType

import torch
from torch import nn

logger = logging.getLogger(__name__)

# SIGUSR2: the time-limit warning hydra-submitit-launcher asks SLURM for (submitit's default).
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class PreemptionHandler:
    """Turns SIGTERM / SIGUSR1 / SIGUSR2 into a flag the training loop checks between iterations.

    The loop then saves a checkpoint and returns, instead of dying mid-write. Handlers are
    installed on ``__enter__`` and the previous ones restored on ``__exit__``, so the signals
    behave normally outside training (e.g. during the final test).
    """

    def __init__(self, signals=PREEMPTION_SIGNALS):
        self.signals = signals
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            logger.warning(
                "received %s: saving a checkpoint at the end of this iteration, then exiting",
                signal.Signals(signum).name,
            )
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> PreemptionHandler:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the message holds the diagnosis."""


def non_finite_grads(model: nn.Module) -> list[str]:
    """Names of the parameters whose gradient holds NaN or inf, in forward order."""
    return [
        name
        for name, param in model.named_parameters()
        if param.grad is not None and not param.grad.isfinite().all()
    ]


def _modules_of(names: list[str], limit: int = 12) -> str:
    modules = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in names))
    shown = ", ".join(modules[:limit])
    return shown + (f", ... ({len(modules)} layers)" if len(modules) > limit else "")


@torch.no_grad()
def first_non_finite_output(model: nn.Module, inputs: torch.Tensor, context=None) -> str | None:
    """Re-run the forward on ``inputs`` and name the first layer whose output is not finite."""
    found: list[str] = []

    def check(name, module, args, output):
        if not found and isinstance(output, torch.Tensor) and not output.isfinite().all():
            found.append(name)

    handles = [
        module.register_forward_hook(partial(check, name))
        for name, module in model.named_modules()
        if name and not any(module.children())
    ]
    try:
        with torch.random.fork_rng(devices=[]), (context or contextlib.nullcontext)():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def diagnose_non_finite(
    model: nn.Module,
    *,
    iteration: int,
    epoch: int,
    lr: float,
    loss: float,
    grad_norm: float,
    first_bad_output: str | None = None,
) -> str:
    """A message saying where the run went non-finite and which layers were hit.

    Args:
        iteration: the 1-based global iteration that failed (as in metrics.jsonl).
        first_bad_output: the first layer whose forward output was non-finite, if known.
    """
    bad_grads = non_finite_grads(model)
    bad_weights = [n for n, p in model.named_parameters() if not p.isfinite().all()]
    total = sum(1 for _ in model.parameters())
    return "\n".join(
        [
            f"non-finite loss or gradient at iteration {iteration} (epoch {epoch}): loss={loss}, "
            f"gradient norm={grad_norm}, lr={lr:.6g}",
            f"layers with non-finite gradients ({len(bad_grads)} of {total} parameters, forward "
            f"order): {_modules_of(bad_grads) if bad_grads else 'none'}",
            "weights already non-finite before this step: "
            + (_modules_of(bad_weights) if bad_weights else "none"),
            "first layer with a non-finite output on this batch: "
            + (first_bad_output or "none (the forward was finite: the backward overflowed)"),
            "the optimizer step was not taken and no checkpoint was written, so the last good "
            "checkpoint is the latest one. Lower optim.base_lr or add optim.warmup_epochs.",
        ]
    )
