"""What happens around the training loop, as hooks the trainer calls at fixed points.

A hook (detectron2's ``HookBase``) overrides some of ``before_train``, ``before_epoch``,
``before_step``, ``after_backward``, ``after_step``, ``after_epoch`` and ``after_train``; the
trainer sets ``hook.trainer`` and calls the hooks in list order. What a hook may read from
the trainer: ``model`` (bare), ``net`` (DDP-wrapped or the same), ``dist``, ``position``,
``metrics``, ``autocast()``, ``prepare(clips)``, ``last_stats``, ``run_dir``, ``options``.

``after_backward`` runs once the gradients of the step exist and its statistics are agreed
across ranks, before the optimizer step: the one point where a hook can refuse the step.
A hook with nothing to do calls :meth:`HookBase.disable` once, and is not called again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from videogn.engine import distributed
from videogn.engine.checkpoint import latest_checkpoint, try_save_checkpoint
from videogn.engine.guards import (
    NonFiniteLossError,
    PreemptionHandler,
    diagnose_non_finite,
    first_non_finite_output,
)
from videogn.engine.metrics import peak_memory_mb
from videogn.engine.precise_bn import update_bn_stats
from videogn.models.norm import has_batch_norm

logger = logging.getLogger(__name__)


class HookBase:
    """Does nothing at every point; subclasses override the points they need."""

    trainer = None  # set by the Trainer
    enabled = True

    def disable(self, reason: str) -> None:
        """Say once why this hook has nothing to do, and stop being called."""
        logger.info("%s: %s; turned off", type(self).__name__, reason)
        self.enabled = False

    def before_train(self): ...

    def after_train(self): ...

    def before_epoch(self): ...

    def after_epoch(self):
        """After the epoch's last iteration, before the epoch counter moves."""

    def before_step(self): ...

    def after_backward(self):
        """Gradients ready, ``trainer.last_stats`` agreed, the optimizer step not yet taken."""

    def after_step(self):
        """``trainer.position.global_iteration`` already counts this step."""


class PreemptionHook(HookBase):
    """SIGTERM / SIGUSR1 / SIGUSR2 end the run after the current iteration, with a checkpoint.

    The request travels in the step's all-reduce (``trainer.stop_requested``), so every rank
    stops at the same iteration; the signal handlers are only installed while training.
    """

    def __init__(self):
        self.handler = PreemptionHandler()

    @property
    def received(self) -> int | None:
        """The signal this process received (None if none): a time limit or a stop."""
        return self.handler.received

    def before_train(self):
        self.handler.__enter__()

    def after_train(self):
        self.handler.__exit__()

    def before_step(self):
        self.trainer.stop_requested = self.handler.requested

    def after_step(self):
        if self.trainer.last_stats["stop"]:
            self.trainer.stop("preempted")


class NonFiniteGuard(HookBase):
    """A NaN/inf loss or gradient stops the run before the optimizer step, with a diagnosis.

    fp16 runs are exempt for gradients: the grad scaler skips overflowing steps itself.
    """

    def after_backward(self):
        trainer, stats = self.trainer, self.trainer.last_stats
        overflow_is_skipped = trainer.scaler.is_enabled()
        finite_grads = math.isfinite(stats["grad_norm"]) or overflow_is_skipped
        if math.isfinite(stats["loss"]) and finite_grads:
            return
        pos = trainer.position
        first_bad = first_non_finite_output(trainer.model, trainer.last_inputs, trainer.autocast)
        message = diagnose_non_finite(
            trainer.model,
            iteration=pos.global_iteration + 1,
            epoch=pos.epoch,
            first_bad_output=first_bad,
            lr=stats["lr"],
            loss=stats["loss"],
            grad_norm=stats["grad_norm"],
        )
        trainer.metrics.write("error", pos.global_iteration + 1, error=message)
        raise NonFiniteLossError(message)


class PreciseBNHook(HookBase):
    """Recompute BN running statistics with the epoch's final weights (see precise_bn.py).

    Args:
        batches: ``(epoch, seed) -> iterable of clip batches``, apart from training's.
        num_batches: how many batches to average over.
    """

    def __init__(self, batches: Callable[[int, int], Iterable[torch.Tensor]], num_batches: int):
        self.batches, self.num_batches = batches, num_batches

    def before_train(self):
        if not has_batch_norm(self.trainer.model):
            self.disable("the model has no BatchNorm layer, nothing to recompute")

    def after_epoch(self):
        trainer = self.trainer
        clips = self.batches(trainer.position.epoch, trainer.options.sampler_seed)
        update_bn_stats(trainer.model, clips, self.num_batches, forward=self.forward)
        # A validation at this step finds the population statistics already in the model.
        trainer.precise_bn_step = trainer.position.global_iteration

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        with self.trainer.autocast():
            return self.trainer.model(self.trainer.prepare(clips))


class Checkpointer(HookBase):
    """Atomic checkpoints: every ``period`` iterations, at each epoch's end, and when the run
    stops early (signal, ``max_iterations``); the newest ``keep`` are kept. A write that fails
    (full disk, I/O error) leaves the previous ones untouched, warns, and training goes on
    (``checkpoint.try_save_checkpoint``).

    The epoch's checkpoint is written once the position points at the next epoch (the next
    ``before_epoch``, or ``after_train``), so a resume starts there, after precise BN.
    """

    def __init__(self, period: int = 0, keep: int = 2):
        self.period, self.keep = period, keep
        self.epoch_done = False
        self.unsaved_iteration: int | None = None  # the last save failed (rank 0 knows)

    def after_step(self):
        trainer, pos = self.trainer, self.trainer.position
        if trainer.status != "running":
            self.save()
            return
        at_epoch_end = pos.iteration_in_epoch == trainer.epoch_stop
        if self.period and pos.global_iteration % self.period == 0 and not at_epoch_end:
            self.save()

    def after_epoch(self):
        self.epoch_done = True

    def before_epoch(self):
        if self.epoch_done:
            self.save()

    def after_train(self):
        if self.epoch_done and self.trainer.status == "finished":
            self.save()
        if self.unsaved_iteration is not None:
            logger.error(
                "the run ended (%s) without a checkpoint of its last state (iteration %d): the "
                "write failed; a resume starts from %s",
                self.trainer.status,
                self.unsaved_iteration,
                latest_checkpoint(self.trainer.run_dir) or "the beginning (no checkpoint)",
            )

    def save(self) -> Path | None:
        """Write the trainer's state (collective: every rank contributes its RNG state)."""
        trainer = self.trainer
        self.epoch_done = False
        state = trainer.state_dict()
        if trainer.dist.is_main:
            iteration = trainer.position.global_iteration
            written = try_save_checkpoint(state, trainer.run_dir, iteration, self.keep)
            if written is not None:  # a failed write (full disk) warned; training goes on
                trainer.last_checkpoint = written
                logger.info("saved %s", written)
            self.unsaved_iteration = None if written is not None else iteration
        distributed.barrier()
        return trainer.last_checkpoint


class MetricsLogger(HookBase):
    """Mean loss, accuracy, lr, throughput and memory every ``period`` iterations (and the
    first) to metrics.jsonl and TensorBoard; a progress bar per epoch on rank 0."""

    def __init__(self, period: int = 20, progress_bar: bool = True):
        self.period, self.progress_bar = period, progress_bar
        self.bar = None
        self.window = self.empty_window()

    @staticmethod
    def empty_window() -> dict:
        return dict(iterations=0, loss=0.0, top1=0.0, data_time=0.0, compute_time=0.0)

    def before_epoch(self):
        trainer = self.trainer
        self.bar = tqdm(
            total=trainer.epoch_stop,
            initial=trainer.position.iteration_in_epoch,
            desc=f"epoch {trainer.position.epoch}",
            disable=not (self.progress_bar and trainer.dist.is_main),
            dynamic_ncols=True,
        )
        self.window = self.empty_window()

    def after_step(self):
        stats, window = self.trainer.last_stats, self.window
        window["iterations"] += 1
        for key in ("loss", "top1", "data_time", "compute_time"):
            window[key] += stats[key]
        step_time = (window["data_time"] + window["compute_time"]) / window["iterations"]
        clips_per_s = self.trainer.options.clips_per_iteration / max(step_time, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{stats['loss']:.3f}",
            lr=f"{stats['lr']:.2g}",
            data=f"{window['data_time'] / window['iterations']:.2f}s",
            compute=f"{window['compute_time'] / window['iterations']:.2f}s",
            clips_s=f"{clips_per_s:.1f}",
            refresh=False,
        )
        if window["iterations"] >= self.period or self.trainer.position.global_iteration == 1:
            self.write(clips_per_s)
        if self.trainer.status != "running":
            self.close_bar()

    def write(self, clips_per_s: float) -> None:
        trainer, window = self.trainer, self.window
        n = window["iterations"]
        mem_name, mem = peak_memory_mb(trainer.dist.device)
        trainer.metrics.write(
            "train",
            trainer.position.global_iteration,
            epoch=trainer.position.epoch,
            loss=window["loss"] / n,
            top1=window["top1"] / n,
            top1_err=100.0 - window["top1"] / n,
            lr=trainer.last_stats["lr"],
            grad_norm=trainer.last_stats["grad_norm"],
            clips_per_s=clips_per_s,
            data_time=window["data_time"] / n,
            compute_time=window["compute_time"] / n,
            **{mem_name: mem},
        )
        trainer.metrics.flush()
        self.window = self.empty_window()

    def after_epoch(self):
        self.close_bar()

    def after_train(self):
        self.close_bar()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
