"""What ``videogn-train``, ``videogn-test`` (and the sweeps, predict) do, given a composed
config: turn it into objects (:mod:`videogn.engine.builders`), wire them, run them."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from videogn.config import TrainConfig, drop_moved_keys
from videogn.data.transforms import describe_views
from videogn.engine import distributed, requeue
from videogn.engine.builders import RunSpec, build_run_spec
from videogn.engine.builders.assemble import build_trainer
from videogn.engine.builders.data import DataSource
from videogn.engine.builders.model import place_model
from videogn.engine.checkpoint import (
    check_model_state,
    find_resume_checkpoint,
    load_designated_checkpoint,
)
from videogn.engine.evaluate import evaluate_shard, gather_results, summarize, write_results
from videogn.engine.faults import named_faults
from videogn.engine.hooks import PreemptionHook
from videogn.engine.numerics import configure_numerics
from videogn.engine.trainer import Trainer, autocast, model_input

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


def resume(trainer: Trainer, resume: str, run_dir: Path) -> Path | None:
    """Load the checkpoint that ``trainer.resume`` designates, if any; return its path."""
    found = find_resume_checkpoint(resume, run_dir)  # verified, newest valid
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


def agree_on_run_dir(run_dir: str | Path, dist: distributed.DistInfo) -> Path:
    """Rank 0's run directory for every rank, and the first attempt's after a torchrun restart.

    hydra names a new directory (by the time) in each attempt unless ``hydra.run.dir`` is
    given; a restarted job must go on in the one that holds its checkpoints.
    """
    chosen = str(Path(run_dir).resolve())
    if dist.is_main:
        chosen = distributed.first_attempt_value("run_dir", chosen)
    chosen = Path(distributed.broadcast_object(chosen))
    attempt = distributed.elastic_attempt()
    if attempt > 0 and dist.is_main:
        logger.warning("torchrun restart %d of this job: continuing the run in %s", attempt, chosen)
        if chosen != Path(run_dir).resolve():
            also_log_to(chosen / "train.log")  # this attempt's hydra dir holds its log too
    return chosen


def also_log_to(path: Path) -> None:
    """Append the log to ``path`` as well, in the format of the existing handlers."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    if root.handlers:
        handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)


def requeue_after_time_limit(trainer: Trainer, max_requeues: int, run_dir: Path) -> bool:
    """After a stop: if any rank's signal was a time-limit warning, rank 0 requeues the SLURM
    job (collective: every rank calls it). Returns whether the job was requeued."""
    hook = next((h for h in trainer.hooks if isinstance(h, PreemptionHook)), None)
    signals = distributed.all_gather_objects(hook.received if hook else None)
    if not trainer.dist.is_main or not requeue.wants_requeue(signals):
        return False
    return requeue.request_requeue(max_requeues, run_dir)


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train (resuming if there is a checkpoint), then test. Returns a summary dict."""
    spec = build_run_spec(cfg)  # a Table 8 cell without its weights stops here
    spec.model.fetch_pretrained()  # an unreachable named source fails here, in seconds
    dist = distributed.init_distributed(spec.device, spec.trainer.collective_timeout_s)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of the log: rank 0's
    run_dir = agree_on_run_dir(run_dir, dist)
    if dist.is_main:
        OmegaConf.save(cfg, run_dir / RESOLVED_CONFIG, resolve=True)
    configure_numerics(
        deterministic=spec.deterministic,
        cudnn_benchmark=spec.trainer.cudnn_benchmark,
        tf32=spec.trainer.tf32,
    )
    set_cpu_threads(spec.trainer.num_threads, spec.data.num_workers, dist.device)
    spec.data.resolve(dist)
    train_dataset = spec.data.train_dataset(
        spec.data.train_records(), spec.samplers.train, seed=spec.seed
    )
    seed_everything(spec.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = place_model(spec.model.create(), dist, channels_last_3d=spec.trainer.channels_last_3d)
    seed_everything(spec.seed + dist.rank)  # ranks draw different dropout masks
    trainer = build_trainer(spec, dist, run_dir, train_dataset, model)
    resumed_from = resume(trainer, spec.trainer.resume, run_dir)
    with named_faults(dist.rank, run_dir):  # a killed loader worker, a lost peer
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
    if status == "preempted":
        summary["requeued"] = requeue_after_time_limit(trainer, spec.trainer.max_requeues, run_dir)
    if status == "finished" and spec.trainer.test_at_end:
        with named_faults(dist.rank, run_dir):
            summary["test"] = test_at_end(spec, trainer, model, summary["checkpoint"])
    trainer.metrics.close()
    return summary


def test_at_end(spec: RunSpec, trainer: Trainer, model: nn.Module, checkpoint: str | None):
    """The run's final test; its numbers also go to metrics.jsonl (rank 0's results)."""
    test = test_model(spec, model, trainer.dist, trainer.run_dir, extra={"checkpoint": checkpoint})
    if test is not None and "video_top1" in test:
        numbers = ("video_top1", "video_top5", "clip_top1", "clip_top5", "mean_class_accuracy")
        trainer.metrics.write(
            "test", trainer.position.global_iteration, **{k: test[k] for k in numbers}
        )
    return test


def test_model(
    spec: RunSpec,
    model: nn.Module,
    dist: distributed.DistInfo,
    out_dir: str | Path,
    extra: dict | None = None,
) -> dict | None:
    """The run's multi-view test of ``model`` on the validation list; rank 0 writes and
    returns the results."""
    source = spec.data.resolve(dist)
    records = spec.data.val_records(spec.test.max_videos)
    t = spec.test
    logger.info(
        "testing %d videos: %d clips (%s) x %s of %s frames, %s head, %s of softmax scores",
        len(records), t.num_clips, t.clip_positions, describe_views(t.num_crops),
        spec.samplers.clip, t.head.kind, t.aggregate,
    )  # fmt: skip
    results = evaluate_shard(
        model,
        spec.data.test_dataset(records, spec.samplers.test, spec.test_transform()),
        distributed.shard_indices(len(records), dist.rank, dist.world_size),
        device=dist.device,
        aggregate=t.aggregate,
        views_per_batch=t.views_per_batch,
        num_workers=t.num_workers,
        forward_context=partial(autocast, dist.device, spec.trainer.amp_dtype),
        prepare=input_preparation(spec),
        progress=dist.is_main,
        head=t.head,
    )
    results = gather_results(results)
    if not dist.is_main:
        return None
    return report_test(spec, source, records, results, out_dir, extra or {})


def input_preparation(spec: RunSpec):
    """Clips on the device -> the model's input, as the run trained (normalization, layout)."""
    return partial(
        model_input,
        normalization=spec.data.normalization,
        channels_last_3d=spec.trainer.channels_last_3d,
    )


def report_test(
    spec: RunSpec,
    source: DataSource,
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
        num_clips=spec.test.num_clips,
        num_crops=spec.test.num_crops,
        aggregate=spec.test.aggregate,
        head=spec.test.head.kind,
        head_window=spec.test.head.window,
        clip_positions=spec.test.clip_positions,
        val_list=source.val_list,
        clip=spec.samplers.clip,
        norm=spec.model.norm,
        **extra,
    )
    results_path, scores_path = write_results(out_dir, summary, results, paths)
    summary.update(results_file=str(results_path), scores_file=str(scores_path))
    if summary["videos_failed"]:
        logger.warning("%d of %d videos could not be tested (see %s)",
                       summary["videos_failed"], len(records), results_path)  # fmt: skip
    return summary


@dataclass
class RestoredRun:
    """A trained model on its device, with the specs of the run that trained it."""

    spec: RunSpec
    model: nn.Module
    dist: distributed.DistInfo
    checkpoint: Path
    iteration: int | None


def restore_run(
    checkpoint: str | Path,
    overrides: DictConfig | dict | list[str] = (),
    *,
    dist: distributed.DistInfo | None = None,
    loader_workers: int | None = None,
) -> RestoredRun:
    """Rebuild a run from a checkpoint's recorded config and load its weights.

    Args:
        checkpoint: a checkpoint file or a run directory (its latest checkpoint).
        overrides: settings replacing the recorded ones (``test.*``, ``data.*``,
            ``sampler.*``, ``device``), as a config or ``key=value`` strings.
        dist: the process group (default: initialized from the run's ``device``).
        loader_workers: loader processes beside this one (default ``test.num_workers``),
            for the share of CPU threads.
    """
    # A run directory's newest valid checkpoint (a torn newer file is skipped with a warning).
    path, state = load_designated_checkpoint(checkpoint, required=("model", "config"))
    if isinstance(overrides, (list, tuple)):
        overrides = OmegaConf.from_dotlist(list(overrides))
    recorded = drop_moved_keys(state["config"])  # a run from before a key moved
    schema = OmegaConf.structured(TrainConfig)
    spec = build_run_spec(
        OmegaConf.merge(schema, recorded, overrides), trained=OmegaConf.merge(schema, recorded)
    )
    dist = dist or distributed.init_distributed(spec.device)
    # The run's kernel switches: torch's default lets cuDNN convolutions use TF32, which a
    # run trained with trainer.tf32=false (the default) must not be tested with.
    configure_numerics(
        deterministic=spec.deterministic,
        cudnn_benchmark=spec.trainer.cudnn_benchmark,
        tf32=spec.trainer.tf32,
    )
    workers = spec.test.num_workers if loader_workers is None else loader_workers
    set_cpu_threads(spec.trainer.num_threads, workers, dist.device)
    model = spec.model.create(pretrained=False)
    check_model_state(model, state["model"], path)  # another model config: the keys named
    model.load_state_dict(state["model"])
    model = place_model(model, dist, channels_last_3d=spec.trainer.channels_last_3d).eval()
    iteration = state.get("position", {}).get("global_iteration")
    return RestoredRun(spec, model, dist, path, iteration)


def test_checkpoint(checkpoint: str, overrides: DictConfig, out_dir: str | Path) -> dict | None:
    """``videogn-test``: restore the run, then run its test (with the overrides)."""
    run = restore_run(checkpoint, overrides)
    logger.info("testing %s (iteration %s)", run.checkpoint, run.iteration)
    return test_model(
        run.spec, run.model, run.dist, out_dir, extra={"checkpoint": str(run.checkpoint)}
    )
