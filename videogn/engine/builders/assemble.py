"""A :class:`~videogn.engine.trainer.Trainer` assembled from a run's specs: the batch,
loaders, optimizer, schedule, scaler and hooks. No config is read here."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from videogn.engine import distributed
from videogn.engine.builders import RunSpec
from videogn.engine.builders.trainer import TrainerSpec
from videogn.engine.hooks import (
    Checkpointer,
    HookBase,
    MetricsLogger,
    NonFiniteGuard,
    PreciseBNHook,
    PreemptionHook,
)
from videogn.engine.memory_setup import apply_activation_checkpointing
from videogn.engine.optim import build_scheduler
from videogn.engine.sampling import ResumableTrainSampler
from videogn.engine.trainer import Trainer, TrainOptions

logger = logging.getLogger(__name__)


def build_hooks(
    spec: TrainerSpec, precise_bn_batches, validation: HookBase | None = None
) -> list[HookBase]:
    """The standard hooks, in calling order: logging sees the step first, the checkpoint
    comes last (after precise BN and validation at an epoch's end).

    Args:
        precise_bn_batches: ``(epoch, seed) -> iterable of clip batches`` for precise BN.
        validation: the periodic validation hook, if any (:func:`build_validation_hook`).
    """
    hooks: list[HookBase] = [
        MetricsLogger(spec.log_period, spec.progress_bar),
        PreemptionHook(),
        NonFiniteGuard(),
    ]
    if spec.precise_bn_batches > 0:
        hooks.append(PreciseBNHook(precise_bn_batches, spec.precise_bn_batches))
    if validation is not None:
        hooks.append(validation)
    hooks.append(Checkpointer(spec.checkpoint_period, spec.keep_checkpoints))
    return hooks


def build_validation_hook(
    spec: RunSpec, dist: distributed.DistInfo, batch_size: int, period: int, precise_bn_batches
):
    """Figure 7's monitor: one training-style clip per video of the val list's fixed subset,
    BN models with population statistics of ``precise_bn_batches`` (when precise BN is on)."""
    from videogn.engine.validation import ValidationHook, choose_videos

    records = spec.data.val_records()
    chosen = choose_videos(len(records), spec.trainer.val_videos, spec.seed)
    dataset = spec.data.train_dataset(
        [records[i] for i in chosen], spec.samplers.train, seed=spec.seed, substitute_failures=False
    )
    return ValidationHook(
        dataset,
        distributed.shard_indices(len(chosen), dist.rank, dist.world_size),
        num_videos=len(chosen),
        period=period,
        batch_size=batch_size,  # the training batch: evaluation needs less memory than a step
        num_workers=spec.data.num_workers,
        log_period=spec.trainer.log_period,
        seed=spec.seed,
        precise_bn_batches=precise_bn_batches if spec.trainer.precise_bn_batches > 0 else None,
        precise_bn_num_batches=spec.trainer.precise_bn_batches,
    )


def resolve_batch(spec: RunSpec, dist: distributed.DistInfo) -> tuple[int, int]:
    """(clips per process per step, accumulation steps); ``data.batch_size=auto`` asks the
    memory planner for the largest batch that fits, accumulating up to the target total."""
    request, trainer = spec.data.batch, spec.trainer
    if request.batch_size == "auto":
        from videogn.memory import plan_batch

        budget = request.memory_budget_gb
        plan = plan_batch(
            spec.model.kwargs,
            num_frames=spec.samplers.train.num_frames,
            crop_size=spec.data.train_transform.crop_size,
            dtype={"none": "fp32"}.get(trainer.amp, trainer.amp),
            channels_last=trainer.channels_last_3d,
            budget_bytes=None if budget is None else int(budget * 2**30),
            target_total_batch=request.target_total_batch,
            world_size=dist.world_size,
        )
        logger.info("memory planner: %s", plan.describe())
        return plan.per_device_batch, plan.accumulation_steps
    if not isinstance(request.batch_size, int) or request.batch_size < 1:
        raise ValueError(
            f"data.batch_size must be a positive integer or 'auto', got {request.batch_size!r}"
        )
    return request.batch_size, trainer.accumulation_steps


def train_loader_factory(dataset, *, batch_size: int, num_workers: int, dist: distributed.DistInfo):
    """``(epoch, start_batch, seed) -> DataLoader`` resuming the epoch's order at a batch."""
    sampler = ResumableTrainSampler(
        len(dataset), batch_size=batch_size, rank=dist.rank, world_size=dist.world_size, seed=0
    )

    def make(epoch: int, start_batch: int, seed: int) -> DataLoader:
        sampler.seed = seed
        sampler.set_position(epoch, start_batch)
        # Clip augmentation is drawn from (seed, epoch, index), set on a copy of the dataset:
        # loaders made at once (training's, and precise BN's before a mid-epoch validation)
        # must not change each other's clips, in-process loaders (num_workers=0) included.
        view = copy.copy(dataset)
        view.seed = seed
        view.set_epoch(epoch)
        # Our own generator: the loader must not draw from the global RNG that dropout uses.
        generator = torch.Generator().manual_seed(seed + epoch)
        return DataLoader(
            view,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=dist.device.type == "cuda",
            drop_last=True,
            generator=generator,
            persistent_workers=False,
        )

    return make, sampler.batches_per_epoch


def build_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            "trainer.amp=fp16 needs a GPU (fp16 autocast with a grad scaler); "
            "on CPU use trainer.amp=bf16"
        )
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def train_options(
    spec: RunSpec, total_iterations: int, iterations_per_epoch: int, total_batch: int,
    accumulation: int,
) -> TrainOptions:  # fmt: skip
    """The loop's plain values, from the specs and the resolved batch and schedule."""
    return TrainOptions(
        total_iterations=total_iterations,
        iterations_per_epoch=iterations_per_epoch,
        clips_per_iteration=total_batch,
        sampler_seed=spec.seed,
        accumulation_steps=accumulation,
        amp_dtype=spec.trainer.amp_dtype,
        channels_last_3d=spec.trainer.channels_last_3d,
        max_iterations=spec.trainer.max_iterations,
        # Recorded with the weights: the input normalization they expect.
        extra_state={"normalization": list(map(list, spec.data.normalization))},
        input_normalization=spec.data.normalization,
    )


def build_trainer(
    spec: RunSpec, dist: distributed.DistInfo, run_dir: Path, train_dataset, model: nn.Module
) -> Trainer:
    """Everything around the model: loaders, optimizer, schedule, scaler, hooks."""
    per_device, accumulation = resolve_batch(spec, dist)
    apply_activation_checkpointing(spec, model, per_device)  # "auto" needs the batch
    (make_loader, batches_per_epoch), (make_bn_loader, _) = (
        train_loader_factory(train_dataset, batch_size=per_device,
                             num_workers=spec.data.num_workers, dist=dist)
        for _ in range(2)  # training, and precise BN (its own sampler, so positions never mix)
    )  # fmt: skip
    iterations_per_epoch = batches_per_epoch // accumulation
    if iterations_per_epoch == 0:
        raise ValueError(
            f"one epoch has {batches_per_epoch} batches, fewer than "
            f"trainer.accumulation_steps={accumulation}"
        )
    total_batch = per_device * accumulation * dist.world_size
    optimizer = spec.optim.optimizer(model, total_batch)
    schedule = spec.optim.schedule(iterations_per_epoch)
    logger.info(
        "batch %d clips (%d per process x %d processes x %d accumulation), lr %.4g, "
        "%d iterations (%d per epoch), lr x%g at iterations %s, warmup %d",
        total_batch, per_device, dist.world_size, accumulation, optimizer.param_groups[0]["lr"],
        schedule.total_iterations, iterations_per_epoch, schedule.gamma,
        schedule.step_iterations, schedule.warmup_iterations,
    )  # fmt: skip

    def bn_batches(epoch: int, seed: int):
        # A different seed than training's, so precise BN sees its own draw of clips.
        return (batch["clip"] for batch in make_bn_loader(epoch, 0, seed + 1))

    validation = None
    period = spec.trainer.validation_period(iterations_per_epoch)
    if period != 0:  # negative: the hook names the bad value
        validation = build_validation_hook(spec, dist, per_device, period, bn_batches)

    return Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, schedule),
        scaler=build_scaler(spec.trainer.amp, dist.device),
        train_batches=make_loader,
        dist=dist,
        run_dir=run_dir,
        options=train_options(
            spec, schedule.total_iterations, iterations_per_epoch, total_batch, accumulation
        ),  # fmt: skip
        config=spec.config,
        hooks=build_hooks(spec.trainer, bn_batches, validation),
    )
