"""What ``videogn-train`` and ``videogn-test`` do, given a composed config and a run directory."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from videogn.config import TrainConfig, enum_value
from videogn.engine import builders, distributed
from videogn.engine.checkpoint import (
    check_model_state,
    find_resume_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
)
from videogn.engine.evaluate import evaluate_shard, gather_results, summarize, write_results
from videogn.engine.numerics import configure_numerics
from videogn.engine.trainer import Trainer, model_input

logger = logging.getLogger(__name__)

RESOLVED_CONFIG = "config.yaml"  # the run's config with every interpolation resolved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_cpu_threads(num_threads: int | None, num_workers: int, device: torch.device) -> None:
    """Intra-op threads of a CPU run: by default this process's share of the cores, less the
    loader workers.

    Oversubscribed OpenMP threads spin against each other and the decoding workers; on a small
    machine that can cost 10x in step time.
    """
    if device.type != "cpu":
        return
    if num_threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        num_threads = max(1, (cores or 1) // processes_here - num_workers)
    torch.set_num_threads(num_threads)
    logger.info("CPU run: %d compute threads, %d loader workers", num_threads, num_workers)


def warn_config_changes(recorded: dict, current: dict) -> None:
    """Log the settings that differ between a checkpoint and the run resuming it."""
    for group in ("model", "norm", "data", "sampler", "optim"):
        old, new = recorded.get(group, {}), current.get(group, {})
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            logger.warning(
                "resuming with changed %s settings: %s",
                group,
                ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
            )


def resume(trainer: Trainer, cfg: DictConfig, run_dir: Path) -> Path | None:
    """Load the checkpoint that ``trainer.resume`` designates, if any; return its path."""
    found = find_resume_checkpoint(cfg.trainer.resume, run_dir)  # verified, newest valid
    if found is None:
        return None
    path, state = found
    warn_config_changes(state.get("config", {}), trainer.config)
    check_model_state(trainer.model, state["model"], path)
    trainer.load_state_dict(state)
    pos = trainer.position
    logger.info(
        "resumed from %s: epoch %d, iteration %d of the epoch, %d in all",
        path,
        pos.epoch,
        pos.iteration_in_epoch,
        pos.global_iteration,
    )
    return path


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train (resuming if there is a checkpoint), then test. Returns a summary dict."""
    dist = distributed.init_distributed(cfg.device)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of the log: rank 0's
    run_dir = Path(distributed.broadcast_object(str(run_dir)))  # rank 0's dir for every rank
    if dist.is_main:
        OmegaConf.save(cfg, run_dir / RESOLVED_CONFIG, resolve=True)
    configure_numerics(
        deterministic=cfg.deterministic,
        cudnn_benchmark=cfg.trainer.cudnn_benchmark,
        tf32=cfg.trainer.tf32,
    )
    set_cpu_threads(cfg.trainer.num_threads, cfg.data.num_workers, dist.device)
    source = builders.resolve_data_source(cfg.data, dist)
    train_records = builders.read_records(source.train_list, source.train_root, source.num_classes)
    train_dataset = builders.build_train_dataset(cfg, train_records)
    seed_everything(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = builders.place_model(builders.build_model(cfg), cfg, dist)
    seed_everything(cfg.seed + dist.rank)  # ranks draw different dropout masks
    trainer = builders.build_trainer(cfg, dist, run_dir, train_dataset, model)
    if cfg.trainer.val_period != 0:  # negative: the hook names the bad value
        trainer.register_hooks([builders.build_validation_hook(cfg, dist, source)])
    resumed_from = resume(trainer, cfg, run_dir)
    status = trainer.fit()
    checkpoint = trainer.last_checkpoint or resumed_from
    summary = {
        "status": status,
        "run_dir": str(run_dir),
        "iterations": trainer.position.global_iteration,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "world_size": dist.world_size,
        "rank": dist.rank,
    }
    if status == "finished" and cfg.trainer.test_at_end:
        test = test_model(
            cfg, model, dist, run_dir, source, extra={"checkpoint": summary["checkpoint"]}
        )
        if test is not None and "video_top1" in test:
            numbers = ("video_top1", "video_top5", "clip_top1", "clip_top5", "mean_class_accuracy")
            trainer.metrics.write(
                "test", trainer.position.global_iteration, **{k: test[k] for k in numbers}
            )
        summary["test"] = test
    trainer.metrics.close()
    return summary


def forward_context(amp: str, device: torch.device):
    dtype = builders.AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def test_model(
    cfg: DictConfig,
    model: nn.Module,
    dist: distributed.DistInfo,
    out_dir: str | Path,
    source: builders.DataSource | None = None,
    extra: dict | None = None,
) -> dict | None:
    """Multi-view test of ``model`` on the validation list; rank 0 writes and returns results."""
    source = source or builders.resolve_data_source(cfg.data, dist)
    records = builders.read_records(source.val_list, source.val_root, source.num_classes)
    records = records[: cfg.test.max_videos]  # max_videos None: all of them
    t = cfg.test
    input_normalization = builders.normalization(cfg.data.normalization)

    def prepare(views: torch.Tensor) -> torch.Tensor:
        return model_input(views, input_normalization, cfg.trainer.channels_last_3d)

    logger.info(
        "testing %d videos: %d clips x %d crops of %dx%d frames, %s of softmax scores",
        len(records), t.num_clips, t.num_crops, cfg.sampler.num_frames,
        cfg.sampler.frame_interval, enum_value(t.aggregate),
    )  # fmt: skip
    results = evaluate_shard(
        model,
        builders.build_test_dataset(cfg, records),
        distributed.shard_indices(len(records), dist.rank, dist.world_size),
        device=dist.device,
        aggregate=enum_value(t.aggregate),
        views_per_batch=t.views_per_batch,
        num_workers=t.num_workers,
        forward_context=forward_context(enum_value(cfg.trainer.amp), dist.device),
        prepare=prepare,
        progress=dist.is_main,
    )
    results = gather_results(results)
    if not dist.is_main:
        return None
    return report_test(cfg, source, records, results, out_dir, extra or {})


def report_test(
    cfg: DictConfig,
    source: builders.DataSource,
    records: list,
    results: list,
    out_dir: str | Path,
    extra: dict,
) -> dict:
    """Summarize the gathered results, write ``results.json`` and the per-video scores."""
    paths = [r.path for r in records]
    n = source.num_classes
    summary = summarize(results, num_listed=len(records), num_classes=n, paths=paths)
    summary.update(
        num_classes=n,
        chance_top1=100.0 / n,
        num_clips=cfg.test.num_clips,
        num_crops=cfg.test.num_crops,
        aggregate=enum_value(cfg.test.aggregate),
        val_list=source.val_list,
        clip=f"{cfg.sampler.num_frames}x{cfg.sampler.frame_interval}",
        norm=enum_value(cfg.norm.name),
        **extra,
    )
    results_path, scores_path = write_results(out_dir, summary, results, paths)
    summary.update(results_file=str(results_path), scores_file=str(scores_path))
    if summary["videos_failed"]:
        logger.warning("%d of %d videos could not be tested (see %s)",
                       summary["videos_failed"], len(records), results_path)  # fmt: skip
    return summary


def test_checkpoint(checkpoint: str, overrides: DictConfig, out_dir: str | Path) -> dict | None:
    """``videogn-test``: rebuild the recorded model, load its weights, run the test.

    Args:
        checkpoint: a checkpoint file or a run directory (its latest checkpoint).
        overrides: settings replacing the recorded ones (test.*, data.*, sampler.*, device).
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    if "config" not in state:
        raise ValueError(f"{path} records no config; it is not a videogn training checkpoint")
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), state["config"], overrides)
    dist = distributed.init_distributed(cfg.device)
    set_cpu_threads(cfg.trainer.num_threads, cfg.test.num_workers, dist.device)
    model = builders.build_model(cfg, pretrained=False)
    model.load_state_dict(state["model"])
    model = builders.place_model(model, cfg, dist)
    logger.info(
        "testing %s (iteration %s)", path, state.get("position", {}).get("global_iteration")
    )
    return test_model(cfg, model, dist, out_dir, extra={"checkpoint": str(path)})
