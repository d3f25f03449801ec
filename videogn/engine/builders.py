"""Config -> objects, in one place. Nothing else in videogn reads the config.

Every function takes the composed config (``videogn.config.TrainConfig`` as a DictConfig) and
returns plain objects: the model, datasets, loaders, optimizer, schedule and trainer.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from videogn.config import enum_value
from videogn.engine import distributed
from videogn.engine.optim import (
    StepWarmupSchedule,
    build_scheduler,
    build_sgd,
    scaled_lr,
)
from videogn.engine.sampling import ResumableTrainSampler
from videogn.engine.trainer import Trainer, TrainOptions
from videogn.models.factory import create_model

logger = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Options each norm accepts (see videogn.models.norm.NORM_BUILDERS).
NORM_OPTIONS = {
    "bn": ("eps", "momentum"),
    "sync_bn": ("eps", "momentum"),
    "frozen_bn": ("eps",),
    "gn": ("num_groups", "channels_per_group", "eps"),
    "ln": ("eps",),
    "in": ("eps",),
    "none": (),
}


# --------------------------------------------------------------------------------- model
def norm_kwargs(norm_cfg: DictConfig) -> dict:
    """The options of the chosen norm that are set (others are ignored)."""
    name = enum_value(norm_cfg.name)
    kwargs = {k: norm_cfg[k] for k in NORM_OPTIONS[name] if norm_cfg[k] is not None}
    if name == "gn" and "num_groups" not in kwargs and "channels_per_group" not in kwargs:
        kwargs["num_groups"] = 32
    return kwargs


def model_kwargs(cfg: DictConfig) -> dict:
    """``create_model`` arguments (without ``pretrained``) of ``cfg.model`` and ``cfg.norm``."""
    m = cfg.model
    kwargs = {
        "name": enum_value(m.name),
        "norm": enum_value(cfg.norm.name),
        "norm_kwargs": norm_kwargs(cfg.norm),
        "num_classes": m.num_classes,
        "base_width": m.base_width,
        "stem_temporal_kernel": m.stem_temporal_kernel,
        "dropout": m.dropout,
        "zero_init_last_norm": m.zero_init_last_norm,
    }
    if m.stage_depths is not None:
        kwargs["stage_depths"] = tuple(m.stage_depths)
    if m.temporal_kernels is not None:
        kwargs["temporal_kernels"] = [tuple(k) for k in m.temporal_kernels]
    return kwargs


def build_model(cfg: DictConfig, *, pretrained: bool = True) -> nn.Module:
    """The model of ``cfg.model`` with the norm of ``cfg.norm`` (weights from ``pretrained``)."""
    weights = cfg.model.pretrained if pretrained else None
    return create_model(**model_kwargs(cfg), pretrained=weights)


def place_model(model: nn.Module, cfg: DictConfig, dist: distributed.DistInfo) -> nn.Module:
    """Move the model to its device (and memory format); check the norm suits the launch."""
    if enum_value(cfg.norm.name) == "sync_bn" and dist.distributed and dist.device.type != "cuda":
        raise ValueError(
            "norm=sync_bn needs GPUs (nn.SyncBatchNorm has no CPU kernel); "
            "use norm=bn for per-process statistics on CPU"
        )
    model = model.to(dist.device)
    if cfg.trainer.channels_last_3d:
        model = model.to(memory_format=torch.channels_last_3d)
    return model


# --------------------------------------------------------------------------------- data
@dataclass
class DataSource:
    """Resolved locations of a dataset's lists; relative list paths join their split's root."""

    train_list: str
    train_root: str | None
    val_list: str
    val_root: str | None
    classes_file: str | None
    num_classes: int


def demo_cache_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("VIDEOGN_CACHE") or "~/.cache/videogn"
    return Path(base).expanduser() / "demo"


def resolve_data_source(data_cfg: DictConfig, dist: distributed.DistInfo) -> DataSource:
    """The lists to read; for ``source=demo`` the demo dataset is generated (rank 0) first."""
    if enum_value(data_cfg.source) == "demo":
        from videogn.data.demo import ensure_demo_dataset

        cache = demo_cache_dir(data_cfg.demo.cache_dir)
        params = OmegaConf.to_container(data_cfg.demo.params, resolve=True)
        if dist.is_main:
            ensure_demo_dataset(cache, **params)
        distributed.barrier()
        demo = ensure_demo_dataset(cache, **params)
        if demo.num_classes != data_cfg.num_classes:
            raise ValueError(
                f"data.num_classes={data_cfg.num_classes} but the demo dataset in "
                f"{demo.root} has {demo.num_classes} classes"
            )
        root = str(demo.root)
        return DataSource(
            str(demo.train_list),
            root,
            str(demo.val_list),
            root,
            str(demo.classes_file),
            demo.num_classes,
        )
    for key in ("train_list", "val_list"):
        if data_cfg[key] is None:
            raise ValueError(
                f"data.{key} is not set for dataset '{data_cfg.name}' "
                f"(give data.root=... or data.{key}=...)"
            )
    return DataSource(
        data_cfg.train_list,
        data_cfg.train_root if data_cfg.train_root is not None else data_cfg.root,
        data_cfg.val_list,
        data_cfg.val_root if data_cfg.val_root is not None else data_cfg.root,
        data_cfg.classes_file,
        data_cfg.num_classes,
    )


def read_records(list_path: str, root: str | None, num_classes: int) -> list:
    from videogn.data.lists import read_video_list

    records = read_video_list(list_path, root=root)
    if not records:
        raise ValueError(f"video list {list_path} is empty")
    bad = [r for r in records if not 0 <= r.label < num_classes]
    if bad:
        raise ValueError(
            f"{list_path}: label {bad[0].label} of {bad[0].path} is outside "
            f"[0, {num_classes}) (data.num_classes={num_classes})"
        )
    return records


def normalization(name: str) -> tuple:
    from videogn.data.transforms import NORMALIZATIONS

    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown data.normalization '{name}'; valid: {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


def build_train_dataset(cfg: DictConfig, records: list):
    from videogn.data.dataset import VideoClipDataset
    from videogn.data.samplers import TrainClipSampler
    from videogn.data.transforms import TrainTransform

    d = cfg.data
    mean, std = normalization(d.normalization)
    sampler = TrainClipSampler(
        cfg.sampler.num_frames,
        cfg.sampler.frame_interval,
        short_video=enum_value(cfg.sampler.short_video),
    )
    transform = TrainTransform(
        scale_range=tuple(d.scale_range),
        crop_size=d.crop_size,
        flip_p=d.flip_p,
        mean=mean,
        std=std,
        output_dtype=enum_value(d.output_dtype),
    )
    return VideoClipDataset(
        records,
        sampler=sampler,
        transform=transform,
        backend=enum_value(d.backend),
        decode_threads=d.decode_threads,
        max_failure_fraction=d.max_failure_fraction,
        seed=cfg.seed,
    )


def build_test_dataset(cfg: DictConfig, records: list):
    from videogn.data.dataset import VideoTestDataset
    from videogn.data.samplers import TestClipSampler
    from videogn.data.transforms import TestTransform

    t = cfg.test
    mean, std = normalization(cfg.data.normalization)
    sampler = TestClipSampler(
        cfg.sampler.num_frames, cfg.sampler.frame_interval, num_clips=t.num_clips
    )
    transform = TestTransform(
        short_side=t.short_side,
        crop_size=t.crop_size,
        num_crops=t.num_crops,
        mean=mean,
        std=std,
        output_dtype=enum_value(cfg.data.output_dtype),
    )
    return VideoTestDataset(
        records, sampler=sampler, transform=transform, backend=enum_value(cfg.data.backend)
    )


def build_validation_hook(cfg: DictConfig, dist: distributed.DistInfo, source: DataSource):
    """Figure 7's monitor: one training-style clip per video of the val list's fixed subset."""
    from videogn.engine.validation import ValidationHook, choose_videos

    records = read_records(source.val_list, source.val_root, source.num_classes)
    chosen = choose_videos(len(records), cfg.trainer.val_videos, cfg.seed)
    return ValidationHook(
        build_train_dataset(cfg, [records[i] for i in chosen]),
        distributed.shard_indices(len(chosen), dist.rank, dist.world_size),
        num_videos=len(chosen),
        period=cfg.trainer.val_period,
        batch_size=resolve_batch(cfg, dist)[0],  # eval needs less memory than a train step
        num_workers=cfg.data.num_workers,
        log_period=cfg.trainer.log_period,
        seed=cfg.seed,
    )


def train_loader_factory(dataset, *, batch_size: int, num_workers: int, dist: distributed.DistInfo):
    """``(epoch, start_batch, seed) -> DataLoader`` resuming the epoch's order at a batch."""
    sampler = ResumableTrainSampler(
        len(dataset), batch_size=batch_size, rank=dist.rank, world_size=dist.world_size, seed=0
    )

    def make(epoch: int, start_batch: int, seed: int) -> DataLoader:
        sampler.seed = seed
        sampler.set_position(epoch, start_batch)
        # Clip augmentation is drawn from (seed, epoch, index); workers copy the dataset, with
        # these values, when the loader starts iterating.
        dataset.seed = seed
        dataset.set_epoch(epoch)
        # Our own generator: the loader must not draw from the global RNG that dropout uses.
        generator = torch.Generator().manual_seed(seed + epoch)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=dist.device.type == "cuda",
            drop_last=True,
            generator=generator,
            persistent_workers=False,
        )

    return make, sampler.batches_per_epoch


# --------------------------------------------------------------------------------- optim
def resolve_batch(cfg: DictConfig, dist: distributed.DistInfo) -> tuple[int, int]:
    """(clips per process per step, accumulation steps); ``data.batch_size=auto`` asks the
    memory planner for the largest batch that fits, accumulating up to the target total."""
    batch_size = cfg.data.batch_size
    if batch_size == "auto":
        from videogn.memory import plan_batch

        budget = cfg.data.memory_budget_gb
        plan = plan_batch(
            model_kwargs(cfg),
            num_frames=cfg.sampler.num_frames,
            crop_size=cfg.data.crop_size,
            dtype={"none": "fp32"}.get(enum_value(cfg.trainer.amp), enum_value(cfg.trainer.amp)),
            channels_last=cfg.trainer.channels_last_3d,
            budget_bytes=None if budget is None else int(budget * 2**30),
            target_total_batch=cfg.data.target_total_batch,
            world_size=dist.world_size,
        )
        logger.info("memory planner: %s", plan.describe())
        return plan.per_device_batch, plan.accumulation_steps
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"data.batch_size must be a positive integer or 'auto', got {batch_size!r}"
        )
    if cfg.trainer.accumulation_steps < 1:
        raise ValueError(
            f"trainer.accumulation_steps must be >= 1, got {cfg.trainer.accumulation_steps}"
        )
    return batch_size, cfg.trainer.accumulation_steps


def build_optimizer(cfg: DictConfig, model: nn.Module, total_batch: int) -> torch.optim.SGD:
    o = cfg.optim
    lr = scaled_lr(o.base_lr, total_batch, o.base_batch_size)
    return build_sgd(
        model,
        lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
        norm_weight_decay=o.norm_weight_decay,
        decay_bias=o.weight_decay_bias,
    )


def build_schedule(cfg: DictConfig, iterations_per_epoch: int) -> StepWarmupSchedule:
    """The step schedule over ``optim.epochs`` epochs of ``iterations_per_epoch`` iterations."""
    o = cfg.optim
    total = math.ceil(o.epochs * iterations_per_epoch)
    if total < 1:
        raise ValueError(
            f"optim.epochs={o.epochs} gives no iteration "
            f"({iterations_per_epoch} iterations per epoch)"
        )
    return StepWarmupSchedule(
        total_iterations=total,
        step_fractions=tuple(o.lr_steps),
        gamma=o.lr_gamma,
        warmup_iterations=round(o.warmup_epochs * iterations_per_epoch),
        warmup_start_factor=o.warmup_start_factor,
    )


def build_scaler(cfg: DictConfig, device: torch.device) -> torch.amp.GradScaler:
    amp = enum_value(cfg.trainer.amp)
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            "trainer.amp=fp16 needs a GPU (fp16 autocast with a grad scaler); "
            "on CPU use trainer.amp=bf16"
        )
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def train_options(
    cfg: DictConfig,
    schedule: StepWarmupSchedule,
    iterations_per_epoch: int,
    total_batch: int,
    accumulation: int,
) -> TrainOptions:
    """The loop's settings from ``cfg.trainer`` and the resolved batch and schedule."""
    t = cfg.trainer
    return TrainOptions(
        total_iterations=schedule.total_iterations,
        iterations_per_epoch=iterations_per_epoch,
        clips_per_iteration=total_batch,
        sampler_seed=cfg.seed,
        accumulation_steps=accumulation,
        amp_dtype=AMP_DTYPES[enum_value(t.amp)],
        channels_last_3d=t.channels_last_3d,
        precise_bn_batches=t.precise_bn.num_batches if t.precise_bn.enabled else 0,
        checkpoint_period=t.checkpoint_period,
        keep_checkpoints=t.keep_checkpoints,
        log_period=t.log_period,
        progress_bar=t.progress_bar,
        max_iterations=t.max_iterations,
        # Recorded with the weights: the input normalization they expect.
        extra_state={"normalization": list(map(list, normalization(cfg.data.normalization)))},
        input_normalization=normalization(cfg.data.normalization),
    )


def build_trainer(
    cfg: DictConfig, dist: distributed.DistInfo, run_dir: Path, train_dataset, model: nn.Module
) -> Trainer:
    """Everything around the model: loaders, optimizer, schedule, scaler, the loop's options."""
    per_device, accumulation = resolve_batch(cfg, dist)
    loaders = [
        train_loader_factory(
            train_dataset, batch_size=per_device, num_workers=cfg.data.num_workers, dist=dist
        )
        for _ in range(2)  # training, and precise BN (its own sampler, so positions never mix)
    ]
    (make_loader, batches_per_epoch), (make_bn_loader, _) = loaders
    iterations_per_epoch = batches_per_epoch // accumulation
    if iterations_per_epoch == 0:
        raise ValueError(
            f"one epoch has {batches_per_epoch} batches, fewer than "
            f"trainer.accumulation_steps={accumulation}"
        )
    total_batch = per_device * accumulation * dist.world_size
    optimizer = build_optimizer(cfg, model, total_batch)
    schedule = build_schedule(cfg, iterations_per_epoch)
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

    options = train_options(cfg, schedule, iterations_per_epoch, total_batch, accumulation)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    scheduler = build_scheduler(optimizer, schedule)
    scaler = build_scaler(cfg, dist.device)
    return Trainer(model, optimizer, scheduler, scaler, make_loader, bn_batches, dist, run_dir,
                   config, options)  # fmt: skip
