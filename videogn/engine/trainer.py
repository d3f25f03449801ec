"""The training loop: iterations, accumulation, AMP, DDP and resumable state.

Everything around the loop (checkpoints, precise BN, preemption, the NaN guard, logging,
validation) is a hook in :mod:`videogn.engine.hooks`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from videogn.data.transforms import normalize_on_device
from videogn.engine import distributed
from videogn.engine.checkpoint import capture_rng_state, restore_rng_state
from videogn.engine.hooks import HookBase
from videogn.engine.metrics import MetricsWriter

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
    """What the loop itself needs to know, as plain values (built from the config)."""

    total_iterations: int
    iterations_per_epoch: int
    clips_per_iteration: int  # over all processes and accumulation steps
    sampler_seed: int = 0
    accumulation_steps: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last_3d: bool = False
    max_iterations: int | None = None
    extra_state: dict = field(default_factory=dict)  # recorded in every checkpoint
    # (mean, std) for uint8 clips, which are normalized on the device (see model_input)
    input_normalization: tuple | None = None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward's autocast context (a no-op context without a reduced dtype)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class Trainer:
    """Runs SGD iterations over epochs until the schedule ends, a hook stops it, or NaN.

    Args:
        model: the bare model on its device (DDP-wrapped here when distributed).
        train_batches: ``(epoch, start_batch, seed) -> iterable of {"clip", "label"}`` batches.
        run_dir: where checkpoints and metrics go.
        config: the resolved run config, recorded in checkpoints.
        hooks: called around the loop (``videogn.engine.hooks``), in this order.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        train_batches: Callable[[int, int, int], Iterable[dict]],
        dist: distributed.DistInfo,
        run_dir: str | Path,
        options: TrainOptions,
        config: dict | None = None,
        hooks: Sequence[HookBase] = (),
    ):
        self.model = model
        self.net = model
        if dist.distributed:
            device_ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=device_ids)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.train_batches = train_batches
        self.dist, self.run_dir, self.options = dist, Path(run_dir), options
        self.config = config or {}
        self.position = Position()
        self.metrics = MetricsWriter(run_dir, enabled=dist.is_main)
        self.last_checkpoint: Path | None = None
        self.last_stats: dict = {}
        self.last_inputs: torch.Tensor | None = None  # the step's last clips (NaN diagnosis)
        self.stop_requested = False  # a local request (signal), agreed in the step's all-reduce
        self.status = "running"
        self.epoch_stop = 0  # the iteration_in_epoch at which the current epoch ends
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add hooks; they are called after those already registered."""
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def call_hooks(self, point: str) -> None:
        for hook in self.hooks:
            if hook.enabled:
                getattr(hook, point)()

    def stop(self, status: str) -> None:
        """End the run after this iteration with ``status`` ("preempted", "stopped")."""
        self.status = status

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> str:
        """Train to the end of the schedule. Returns "finished", "preempted" or "stopped"."""
        self.status = "running"
        self.call_hooks("before_train")
        try:
            while self.status == "running":
                if self.position.global_iteration >= self.options.total_iterations:
                    self.status = "finished"
                    break
                self.train_epoch()
        finally:
            self.call_hooks("after_train")
        return self.status

    def train_epoch(self) -> None:
        """Iterations from the current position to the end of the epoch (or of the schedule)."""
        opts, pos = self.options, self.position
        remaining = opts.total_iterations - pos.global_iteration
        self.epoch_stop = min(opts.iterations_per_epoch, pos.iteration_in_epoch + remaining)
        self.call_hooks("before_epoch")  # the previous epoch's checkpoint, a progress bar
        # The loader resumes the epoch's sample order at the first batch not yet trained on.
        start_batch = pos.iteration_in_epoch * opts.accumulation_steps
        batches = iter(self.train_batches(pos.epoch, start_batch, opts.sampler_seed))
        while pos.iteration_in_epoch < self.epoch_stop and self.status == "running":
            self.call_hooks("before_step")  # e.g. pick up a preemption signal
            start = time.perf_counter()
            micro_batches = [next(batches) for _ in range(opts.accumulation_steps)]
            loaded = time.perf_counter()
            self.train_step(micro_batches)  # forward, backward, guards, optimizer step
            self.last_stats.update(data_time=loaded - start,
                                   compute_time=time.perf_counter() - loaded)  # fmt: skip
            pos.iteration_in_epoch += 1
            pos.global_iteration += 1
            if opts.max_iterations is not None and pos.global_iteration >= opts.max_iterations:
                self.stop("stopped")  # a smoke run's early end; the schedule is unchanged
            self.call_hooks("after_step")  # logs, checkpoints, agreed stops
        if self.status != "running":
            return  # stopped mid-epoch: the epoch is finished after the resume
        self.call_hooks("after_epoch")  # precise BN, validation
        if pos.iteration_in_epoch >= opts.iterations_per_epoch:
            pos.epoch += 1
            pos.iteration_in_epoch = 0

    # ----------------------------------------------------------------------------- steps
    def autocast(self):
        return autocast(self.dist.device, self.options.amp_dtype)

    def prepare(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(self.dist.device, non_blocking=True)
        return model_input(clips, self.options.input_normalization, self.options.channels_last_3d)

    def forward_backward(self, micro_batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate gradients over the micro-batches; returns (mean loss, top-1 in %)."""
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
        self.last_inputs = clips
        return loss_sum / len(micro_batches), 100 * correct / num_clips

    def train_step(self, micro_batches: list[dict]) -> dict:
        """Forward/backward over the micro-batches, then one optimizer step (unless a hook
        raises in ``after_backward``). Returns ``last_stats``."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, top1 = self.forward_backward(micro_batches)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads).to(self.dist.device).float()
        stop = torch.tensor(float(self.stop_requested), device=self.dist.device)
        # One all-reduce carries the loss, accuracy and the stop request of every rank, so all
        # ranks agree on stopping (signal or NaN) at the same iteration.
        stats = distributed.all_reduce_mean(torch.stack([loss, top1, grad_norm, stop]))
        loss, top1, grad_norm, stop = stats.tolist()
        lr = self.optimizer.param_groups[0]["lr"]
        self.last_stats = {"loss": loss, "top1": top1, "lr": lr, "grad_norm": grad_norm,
                           "stop": stop > 0}  # fmt: skip
        self.call_hooks("after_backward")  # the NaN guard refuses the step here
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return self.last_stats

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
