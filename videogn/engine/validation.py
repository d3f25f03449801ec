"""Periodic validation: the monitor behind the GN paper's Figure 7.

"The monitored validation error is the 1-clip error under the same data augmentation as the
training set" (Wu & He, Sec. 6.3): every ``period`` iterations, one random clip per validation
video, drawn and augmented exactly as a training clip (scale jitter, random crop, flip), is
classified by the model in eval mode. The error is therefore *not* the test accuracy (that is
the 10-clip, full-frame test at the end); it is a cheap, comparable point on a learning curve.

BN statistics: as the Non-local trainer (tools/train_net_video.py, which calls its
bn_helper before every evaluation) and PySlowFast (precise BN before each eval epoch) do, a
BN model is validated with *population* statistics of training batches computed just before
the point (:func:`videogn.engine.precise_bn.update_bn_stats`, the same number of batches as
the epoch-end precise BN), not with the running averages. Unlike those trainers, the
statistics are computed into the model only for the validation and the running buffers are
then restored, so training, its checkpoints and its results are bit-identical with the
monitor on and off. A point at an epoch's end uses the statistics that the epoch's precise BN
has just computed (no second pass). Each row says which statistics it used (``bn_stats``).

A validation video that cannot be decoded is counted as failed (``num_failed`` in the row), not
replaced by another video, which could count one video twice.

Each run is sharded over the DDP ranks (every video counted once, none repeated), the hit
counts are summed over ranks, and rank 0 appends a ``"phase": "val"`` row to ``metrics.jsonl``
(and the same scalars to TensorBoard): the global step, top-1/top-5 error in %, the number of
videos, and beside them the training top-1 error over the last log window.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from videogn.engine import distributed
from videogn.engine.hooks import HookBase
from videogn.engine.metrics import topk_hits
from videogn.engine.precise_bn import update_bn_stats
from videogn.models.norm import BATCH_NORM_TYPES, has_batch_norm

logger = logging.getLogger(__name__)


def choose_videos(num_listed: int, num_videos: int | None, seed: int) -> list[int]:
    """The fixed subset of the listed videos that every validation run uses, in list order.

    Args:
        num_videos: how many (``None``: all of them); at most ``num_listed``.
        seed: the run's seed, so the subset is the same on every rank and after a resume.
    """
    if num_videos is None or num_videos >= num_listed:
        return list(range(num_listed))
    if num_videos < 1:
        raise ValueError(f"trainer.val_videos must be >= 1 or null (all), got {num_videos}")
    chosen = np.random.default_rng([seed, 0x5A1]).choice(num_listed, num_videos, replace=False)
    return sorted(int(i) for i in chosen)


def collate_validation(items: list[dict]) -> dict:
    """A batch of the clips that loaded, with the count of those that failed (their items
    carry ``"error"`` and no clip: a dataset built with ``substitute_failures=False``)."""
    loaded = [item for item in items if item.get("error") is None]
    return {
        "clip": torch.stack([torch.as_tensor(i["clip"]) for i in loaded]) if loaded else None,
        "label": torch.tensor([i["label"] for i in loaded], dtype=torch.long),
        "failed": len(items) - len(loaded),
    }


@torch.no_grad()
def count_hits(
    model: nn.Module,
    batches: Iterable[dict],
    forward: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """[top-1 hits, top-5 hits, clips, failed videos] of ``model`` over ``batches`` of
    {"clip", "label"[, "failed"]}, summed over the ranks (float64 on ``device``, where NCCL
    needs it; counts stay exact)."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64)
    try:
        for batch in batches:
            counts[3] += batch.get("failed", 0)
            if batch["clip"] is None:
                continue
            scores = forward(batch["clip"]).float().cpu()
            hits = topk_hits(scores, batch["label"].view(-1))
            counts[:3] += torch.tensor([hits[1].sum(), hits[5].sum(), len(scores)])
    finally:
        model.train(was_training)
    return distributed.all_reduce_sum(counts.to(device)).cpu()


@contextlib.contextmanager
def bn_buffers_restored(model: nn.Module) -> Iterator[None]:
    """Every BN layer's running mean, variance and batch count are put back on exit."""
    layers = [m for m in model.modules() if isinstance(m, BATCH_NORM_TYPES)]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)
              if b is not None] for m in layers]  # fmt: skip
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(layers, saved, strict=True):
                live = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                        if b is not None]  # fmt: skip
                for target, value in zip(live, buffers, strict=True):
                    target.copy_(value)


class ValidationHook(HookBase):
    """Runs the 1-clip validation every ``period`` iterations and once at the end of training
    (finished, or stopped by ``max_iterations``; not after a preemption or an error).

    A trainer hook (see ``videogn.engine.hooks``) that reads
    ``trainer.model`` (the bare model: no DDP buffer broadcast, ranks may have unequal shards),
    ``trainer.prepare``, ``trainer.autocast``, ``trainer.position``, ``trainer.last_stats``,
    ``trainer.precise_bn_step`` (set by the epoch-end precise BN) and writes through
    ``trainer.metrics``.

    Args:
        dataset: validation videos with the *training* sampler and transform (items
            {"clip", "label"}); ``set_epoch(step)`` gives every run fresh random clips.
        indices: the videos this rank validates (its shard of the fixed subset).
        num_videos: the videos validated over all ranks (recorded in each row).
        period: iterations between runs (> 0).
        batch_size: clips per forward on this rank.
        log_period: iterations of the training-error window reported beside each row.
        precise_bn_batches: ``(epoch, seed) -> iterable of training clip batches`` for the
            population BN statistics computed before each point (None: running averages).
        precise_bn_num_batches: how many of them per rank.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int],
        *,
        num_videos: int,
        period: int,
        batch_size: int,
        num_workers: int = 0,
        log_period: int = 20,
        seed: int = 0,
        precise_bn_batches: Callable[[int, int], Iterable[torch.Tensor]] | None = None,
        precise_bn_num_batches: int = 0,
    ):
        if period < 1:
            raise ValueError(f"trainer.val_period must be >= 1 for a validation hook, got {period}")
        self.dataset, self.indices = dataset, list(indices)
        self.num_videos, self.period = num_videos, period
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_top1 = deque(maxlen=max(1, log_period))
        self.last_validated: int | None = None
        self.precise_bn_batches, self.precise_bn_num_batches = (
            precise_bn_batches,
            precise_bn_num_batches,
        )

    def batches(self, step: int) -> DataLoader:
        self.dataset.set_epoch(step)  # a different, reproducible draw of clips at every run
        return DataLoader(
            Subset(self.dataset, self.indices),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_validation,
            # Own generator: the loader's worker seeds must not come from the global RNG,
            # which training's dropout draws from.
            generator=torch.Generator().manual_seed(self.seed + step),
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        with self.trainer.autocast():
            return self.trainer.model(self.trainer.prepare(clips))

    @contextlib.contextmanager
    def bn_statistics(self, step: int) -> Iterator[dict]:
        """The BN statistics this point validates with; yields what the row records."""
        trainer = self.trainer
        if not has_batch_norm(trainer.model):
            yield {}
        elif self.precise_bn_batches is None or self.precise_bn_num_batches < 1:
            yield {"bn_stats": "running"}
        elif getattr(trainer, "precise_bn_step", None) == step:
            yield {"bn_stats": "precise"}  # the epoch's precise BN just computed them
        else:
            start = time.perf_counter()
            with bn_buffers_restored(trainer.model):
                # Its own draw of training clips at every point, reproducible from the step.
                clips = self.precise_bn_batches(trainer.position.epoch, self.seed + 1 + step)
                update_bn_stats(trainer.model, clips, self.precise_bn_num_batches,
                                forward=self.forward)  # fmt: skip
                yield {"bn_stats": "precise", "precise_bn_seconds": time.perf_counter() - start}

    def validate(self) -> dict:
        """One validation run now; rank 0 writes the row. Returns the row's values."""
        step = self.trainer.position.global_iteration
        start = time.perf_counter()
        with self.bn_statistics(step) as bn_row:
            top1, top5, count, failed = count_hits(
                self.trainer.model, self.batches(step), self.forward, self.trainer.dist.device
            ).tolist()
        per_epoch = getattr(self.trainer.options, "iterations_per_epoch", None)
        row = {
            "epoch": self.trainer.position.epoch,
            # Fractional epochs trained: lets curves of different batch sizes share an x axis.
            **({"epochs": step / per_epoch} if per_epoch else {}),
            "top1_err": 100.0 * (1.0 - top1 / count) if count else float("nan"),
            "top5_err": 100.0 * (1.0 - top5 / count) if count else float("nan"),
            "num_videos": int(count),
            "num_failed": int(failed),
            **bn_row,
            "seconds": time.perf_counter() - start,
        }
        if self.train_top1:
            row["train_top1_err"] = 100.0 - sum(self.train_top1) / len(self.train_top1)
        self.trainer.metrics.write("val", step, **row)
        self.trainer.metrics.flush()
        logger.info(
            "val at iteration %d: top-1 error %.2f%%, top-5 error %.2f%% (%d videos, %d failed, "
            "BN %s, %.1f s)", step, row["top1_err"], row["top5_err"], row["num_videos"],
            row["num_failed"], row.get("bn_stats", "none"), row["seconds"],
        )  # fmt: skip
        self.last_validated = step
        return row

    # ----------------------------------------------------------------------- hook points
    def after_step(self) -> None:
        self.train_top1.append(self.trainer.last_stats["top1"])
        trainer = self.trainer
        if trainer.status == "preempted":
            return  # a preempted run leaves at once; it resumes later
        if trainer.position.global_iteration % self.period:
            return
        if (
            trainer.status == "running"
            and trainer.position.iteration_in_epoch == trainer.epoch_stop
        ):
            return  # the epoch's last step: validated in after_epoch, after precise BN
        self.validate()

    def after_epoch(self) -> None:
        """A period that ends with the epoch is validated here, after the hooks before this one
        (precise BN): the model that the epoch's checkpoint holds, as PySlowFast validates,
        with the statistics the epoch's precise BN computed."""
        step = self.trainer.position.global_iteration
        if step % self.period == 0 and self.last_validated != step:
            self.validate()

    def after_train(self) -> None:
        """The final point of the curve (unless the last iteration was just validated)."""
        if self.trainer.status not in ("finished", "stopped"):
            return  # preempted, or an error is on its way up
        if self.last_validated != self.trainer.position.global_iteration:
            self.validate()
