"""The training loop: iterations, accumulation, AMP, DDP, checkpoints, resume, guards, logs."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from videogn.data.transforms import normalize_on_device
from videogn.engine import distributed
from videogn.engine.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from videogn.engine.guards import (
    NonFiniteLossError,
    PreemptionHandler,
    diagnose_non_finite,
    first_non_finite_output,
)
from videogn.engine.metrics import MetricsWriter, peak_memory_mb
from videogn.engine.precise_bn import update_bn_stats

logger = logging.getLogger(__name__)


@dataclass
class Position:
    """Where the run is: the data position (epoch, iteration within it) and the global step."""

    epoch: int = 0
    iteration_in_epoch: int = 0
    global_iteration: int = 0


def model_input(
    clips: torch.Tensor, normalization: tuple | None, channels_last_3d: bool
) -> torch.Tensor:
    """Clips on the device -> what the model takes: float, normalized, in its memory format.

    The loaders send uint8 clips (``data.output_dtype=uint8``): 4x fewer bytes through the
    workers' shared memory and to the GPU, and no float pass in the workers. They are
    normalized here, with the transforms' own arithmetic, so the values are the same.
    """
    # uint8 test views come channels-last (their decoded layout); the model gets its own.
    memory_format = torch.channels_last_3d if channels_last_3d else torch.contiguous_format
    clips = clips.contiguous(memory_format=memory_format)  # on uint8: 4x cheaper than on float
    if clips.dtype == torch.uint8:
        if normalization is None:
            raise ValueError("uint8 clips need the input normalization (mean, std)")
        return normalize_on_device(clips, *normalization, memory_format=memory_format)
    return clips


@dataclass
class TrainOptions:
    """Everything the loop needs to know, as plain values (built from the config)."""

    total_iterations: int
    iterations_per_epoch: int
    clips_per_iteration: int  # over all processes and accumulation steps
    sampler_seed: int = 0
    accumulation_steps: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last_3d: bool = False
    precise_bn_batches: int = 0
    checkpoint_period: int = 0
    keep_checkpoints: int = 2
    log_period: int = 20
    progress_bar: bool = True
    max_iterations: int | None = None
    extra_state: dict = field(default_factory=dict)  # recorded in every checkpoint
    # (mean, std) for uint8 clips, which are normalized on the device (see model_input)
    input_normalization: tuple | None = None


@dataclass
class _Window:
    """Sums over the iterations since the last log line."""

    iterations: int = 0
    loss: float = 0.0
    top1: float = 0.0
    data_time: float = 0.0
    compute_time: float = 0.0

    def add(self, loss, top1, data_time, compute_time):
        self.iterations += 1
        self.loss += loss
        self.top1 += top1
        self.data_time += data_time
        self.compute_time += compute_time


class Trainer:
    """Runs SGD iterations over epochs until the schedule ends, a signal arrives, or NaN.

    Args:
        model: the bare model on its device (DDP-wrapped here when distributed).
        train_batches: ``(epoch, start_batch, seed) -> iterable of {"clip", "label"}`` batches.
        precise_bn_batches: ``(epoch, seed) -> iterable of clip tensors`` for precise BN.
        run_dir: where checkpoints and metrics go.
        config: the resolved run config, recorded in checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        train_batches: Callable[[int, int, int], Iterable[dict]],
        precise_bn_batches: Callable[[int, int], Iterable[torch.Tensor]],
        dist: distributed.DistInfo,
        run_dir: str | Path,
        config: dict,
        options: TrainOptions,
    ):
        self.model = model
        self.net = model
        if dist.distributed:
            device_ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=device_ids)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.train_batches = train_batches
        self.precise_bn_batches = precise_bn_batches
        self.dist = dist
        self.run_dir = Path(run_dir)
        self.config = config
        self.options = options
        self.position = Position()
        self.metrics = MetricsWriter(run_dir, enabled=dist.is_main)
        self.last_checkpoint: Path | None = None
        self.hooks: list = []  # after_step / after_train, e.g. videogn.engine.validation
        self.last_stats: dict = {}

    def register_hooks(self, hooks: list) -> None:
        for hook in hooks:
            hook.trainer = self
        self.hooks.extend(hooks)

    # ----------------------------------------------------------------------------- steps
    def autocast(self):
        if self.options.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.options.amp_dtype)

    def prepare(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(self.dist.device, non_blocking=True)
        return model_input(clips, self.options.input_normalization, self.options.channels_last_3d)

    def forward_backward(self, micro_batches: list[dict]) -> tuple[torch.Tensor, ...]:
        """Accumulate gradients over the micro-batches.

        Returns:
            (mean loss, top-1 in %, the last micro-batch's clips for a NaN diagnosis).
        """
        loss_sum = torch.zeros((), device=self.dist.device)
        correct = torch.zeros((), device=self.dist.device)
        num_clips = 0
        for k, batch in enumerate(micro_batches):
            clips, labels = self.prepare(batch["clip"]), batch["label"].to(self.dist.device)
            # DDP all-reduces the gradients once, on the last micro-batch.
            last = k == len(micro_batches) - 1
            skip_sync = self.dist.distributed and not last
            with self.net.no_sync() if skip_sync else contextlib.nullcontext():
                with self.autocast():
                    logits = self.net(clips)
                loss = F.cross_entropy(logits.float(), labels)
                self.scaler.scale(loss / len(micro_batches)).backward()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            num_clips += len(labels)
        return loss_sum / len(micro_batches), 100 * correct / num_clips, clips

    def train_step(self, micro_batches: list[dict], stop_requested: bool) -> dict:
        """Forward/backward over the micro-batches, then one optimizer step (unless non-finite)."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, top1, clips = self.forward_backward(micro_batches)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads).to(self.dist.device).float()
        stop = torch.tensor(float(stop_requested), device=self.dist.device)
        # One all-reduce carries the loss, accuracy and the stop request of every rank, so all
        # ranks agree on stopping (signal or NaN) at the same iteration.
        stats = distributed.all_reduce_mean(torch.stack([loss, top1, grad_norm, stop]))
        loss, top1, grad_norm, stop = stats.tolist()
        lr = self.optimizer.param_groups[0]["lr"]
        # With fp16 the scaler skips steps whose gradients overflowed; that is not an error.
        overflow_is_skipped = self.scaler.is_enabled()
        if not math.isfinite(loss) or not (math.isfinite(grad_norm) or overflow_is_skipped):
            self.stop_non_finite(clips, lr=lr, loss=loss, grad_norm=grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss, "top1": top1, "lr": lr, "grad_norm": grad_norm, "stop": stop > 0}

    def stop_non_finite(self, clips: torch.Tensor, **values) -> None:
        first_bad = first_non_finite_output(self.model, clips, self.autocast)
        message = diagnose_non_finite(
            self.model,
            iteration=self.position.global_iteration + 1,
            epoch=self.position.epoch,
            first_bad_output=first_bad,
            **values,
        )
        self.metrics.write("error", self.position.global_iteration + 1, error=message)
        raise NonFiniteLossError(message)

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> str:
        """Train to the end of the schedule. Returns "finished", "preempted" or "stopped"."""
        opts = self.options
        with PreemptionHandler() as preemption:
            while self.position.global_iteration < opts.total_iterations:
                status = self.train_epoch(preemption)
                if status != "epoch_end":
                    break
                self.end_epoch()
            else:
                status = "finished"
        if status != "preempted":  # a preempted run leaves at once; it resumes later
            for hook in self.hooks:
                hook.after_train()
        return status

    def train_epoch(self, preemption: PreemptionHandler) -> str:
        """Iterations from the current position to the end of the epoch (or of the schedule)."""
        opts, pos = self.options, self.position
        remaining = opts.total_iterations - pos.global_iteration
        stop_at = min(opts.iterations_per_epoch, pos.iteration_in_epoch + remaining)
        start_batch = pos.iteration_in_epoch * opts.accumulation_steps
        batches = iter(self.train_batches(pos.epoch, start_batch, opts.sampler_seed))
        bar = tqdm(
            total=stop_at,
            initial=pos.iteration_in_epoch,
            desc=f"epoch {pos.epoch}",
            disable=not (opts.progress_bar and self.dist.is_main),
            dynamic_ncols=True,
        )
        window = _Window()
        while pos.iteration_in_epoch < stop_at:
            start = time.perf_counter()
            micro_batches = [next(batches) for _ in range(opts.accumulation_steps)]
            loaded = time.perf_counter()
            stats = self.train_step(micro_batches, preemption.requested)
            done = time.perf_counter()
            pos.iteration_in_epoch += 1
            pos.global_iteration += 1
            self.last_stats = stats
            window.add(stats["loss"], stats["top1"], loaded - start, done - loaded)
            bar.update(1)
            self.log_window(window, stats, bar)
            if stats["stop"]:
                bar.close()
                self.save()
                return "preempted"
            for hook in self.hooks:
                hook.after_step()
            if opts.max_iterations is not None and pos.global_iteration >= opts.max_iterations:
                bar.close()
                self.save()
                return "stopped"
            at_end = pos.iteration_in_epoch == stop_at
            if (
                opts.checkpoint_period
                and pos.global_iteration % opts.checkpoint_period == 0
                and not at_end
            ):
                self.save()
        bar.close()
        return "epoch_end"

    def end_epoch(self) -> None:
        """Precise BN, then a checkpoint at the start of the next epoch."""
        pos = self.position
        if self.options.precise_bn_batches > 0:
            update_bn_stats(
                self.model,
                self.precise_bn_batches(pos.epoch, self.options.sampler_seed),
                self.options.precise_bn_batches,
                forward=self.bn_forward,
            )
        if pos.iteration_in_epoch >= self.options.iterations_per_epoch:
            pos.epoch += 1
            pos.iteration_in_epoch = 0
        self.save()

    def bn_forward(self, clips: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(self.prepare(clips))

    def log_window(self, window: _Window, stats: dict, bar: tqdm) -> None:
        step_time = (window.data_time + window.compute_time) / window.iterations
        clips_per_s = self.options.clips_per_iteration / max(step_time, 1e-9)
        bar.set_postfix(
            loss=f"{stats['loss']:.3f}",
            lr=f"{stats['lr']:.2g}",
            data=f"{window.data_time / window.iterations:.2f}s",
            compute=f"{window.compute_time / window.iterations:.2f}s",
            clips_s=f"{clips_per_s:.1f}",
            refresh=False,
        )
        pos = self.position
        if window.iterations < self.options.log_period and pos.global_iteration != 1:
            return
        mem_name, mem = peak_memory_mb(self.dist.device)
        self.metrics.write(
            "train",
            pos.global_iteration,
            epoch=pos.epoch,
            loss=window.loss / window.iterations,
            top1=window.top1 / window.iterations,
            top1_err=100.0 - window.top1 / window.iterations,
            lr=stats["lr"],
            grad_norm=stats["grad_norm"],
            clips_per_s=clips_per_s,
            data_time=window.data_time / window.iterations,
            compute_time=window.compute_time / window.iterations,
            **{mem_name: mem},
        )
        self.metrics.flush()
        window.__init__()

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The checkpoint content. Collective: gathers every rank's RNG state."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": distributed.all_gather_objects(capture_rng_state()),
            "position": {**asdict(self.position), "sampler_seed": self.options.sampler_seed},
            "world_size": self.dist.world_size,
            "config": self.config,
            **self.options.extra_state,
        }

    def save(self) -> Path | None:
        state = self.state_dict()
        if self.dist.is_main:
            self.last_checkpoint = save_checkpoint(
                state, self.run_dir, self.position.global_iteration, self.options.keep_checkpoints
            )
            logger.info("saved %s", self.last_checkpoint)
        distributed.barrier()
        return self.last_checkpoint

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (same schedule expected)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        position = dict(state["position"])
        seed = position.pop("sampler_seed")
        if seed != self.options.sampler_seed:
            logger.warning(
                "checkpoint sampler seed %d differs from the run's %d; using the checkpoint's",
                seed,
                self.options.sampler_seed,
            )
            self.options.sampler_seed = seed
        self.position = Position(**position)
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            logger.warning(
                "checkpoint was written by %d processes, this run has %d: the data "
                "order and RNG streams will differ from an uninterrupted run",
                len(rng),
                self.dist.world_size,
            )
        restore_rng_state(rng[self.dist.rank % len(rng)])
