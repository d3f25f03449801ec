"""Periodic validation: the monitor behind the GN paper's Figure 7.

"The monitored validation error is the 1-clip error under the same data augmentation as the
training set" (Wu & He, Sec. 6.3): every ``period`` iterations, one random clip per validation
video, drawn and augmented exactly as a training clip (scale jitter, random crop, flip), is
classified by the model in eval mode, i.e. with BN's running statistics, as the monitor of the
Non-local code does. The error is therefore *not* the test accuracy (that is the 10-clip,
full-frame test at the end); it is a cheap, comparable point on a learning curve.

Each run is sharded over the DDP ranks (every video counted once, none repeated), the hit
counts are summed over ranks, and rank 0 appends a ``"phase": "val"`` row to ``metrics.jsonl``
(and the same scalars to TensorBoard): the global step, top-1/top-5 error in %, the number of
videos, and beside them the training top-1 error over the last log window.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from videogn.engine import distributed
from videogn.engine.hooks import HookBase
from videogn.engine.metrics import topk_hits

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


@torch.no_grad()
def count_hits(
    model: nn.Module,
    batches: Iterable[dict],
    forward: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """[top-1 hits, top-5 hits, clips] of ``model`` over ``batches`` of {"clip", "label"},
    summed over the ranks (float64 on ``device``, where NCCL needs it; counts stay exact)."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    try:
        for batch in batches:
            scores = forward(batch["clip"]).float().cpu()
            hits = topk_hits(scores, batch["label"].view(-1))
            counts += torch.tensor([hits[1].sum(), hits[5].sum(), len(scores)])
    finally:
        model.train(was_training)
    return distributed.all_reduce_sum(counts.to(device)).cpu()


class ValidationHook(HookBase):
    """Runs the 1-clip validation every ``period`` iterations and once at the end of training
    (finished, or stopped by ``max_iterations``; not after a preemption or an error).

    A trainer hook (see ``videogn.engine.hooks``) that reads
    ``trainer.model`` (the bare model: no DDP buffer broadcast, ranks may have unequal shards),
    ``trainer.prepare``, ``trainer.autocast``, ``trainer.position``, ``trainer.last_stats``
    and writes through ``trainer.metrics``.

    Args:
        dataset: validation videos with the *training* sampler and transform (items
            {"clip", "label"}); ``set_epoch(step)`` gives every run fresh random clips.
        indices: the videos this rank validates (its shard of the fixed subset).
        num_videos: the videos validated over all ranks (recorded in each row).
        period: iterations between runs (> 0).
        batch_size: clips per forward on this rank.
        log_period: iterations of the training-error window reported beside each row.
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
    ):
        if period < 1:
            raise ValueError(f"trainer.val_period must be >= 1 for a validation hook, got {period}")
        self.dataset, self.indices = dataset, list(indices)
        self.num_videos, self.period = num_videos, period
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_top1 = deque(maxlen=max(1, log_period))
        self.last_validated: int | None = None

    def batches(self, step: int) -> DataLoader:
        self.dataset.set_epoch(step)  # a different, reproducible draw of clips at every run
        return DataLoader(
            Subset(self.dataset, self.indices),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            # Own generator: the loader's worker seeds must not come from the global RNG,
            # which training's dropout draws from.
            generator=torch.Generator().manual_seed(self.seed + step),
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        with self.trainer.autocast():
            return self.trainer.model(self.trainer.prepare(clips))

    def validate(self) -> dict:
        """One validation run now; rank 0 writes the row. Returns the row's values."""
        step = self.trainer.position.global_iteration
        start = time.perf_counter()
        top1, top5, count = count_hits(
            self.trainer.model, self.batches(step), self.forward, self.trainer.dist.device
        )
        per_epoch = getattr(self.trainer.options, "iterations_per_epoch", None)
        row = {
            "epoch": self.trainer.position.epoch,
            # Fractional epochs trained: lets curves of different batch sizes share an x axis.
            **({"epochs": step / per_epoch} if per_epoch else {}),
            "top1_err": 100.0 * (1.0 - top1.item() / count.item()),
            "top5_err": 100.0 * (1.0 - top5.item() / count.item()),
            "num_videos": int(count.item()),
            "seconds": time.perf_counter() - start,
        }
        if self.train_top1:
            row["train_top1_err"] = 100.0 - sum(self.train_top1) / len(self.train_top1)
        self.trainer.metrics.write("val", step, **row)
        self.trainer.metrics.flush()
        logger.info(
            "val at iteration %d: top-1 error %.2f%%, top-5 error %.2f%% (%d videos, %.1f s)",
            step, row["top1_err"], row["top5_err"], row["num_videos"], row["seconds"],
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
        (precise BN): the model that the epoch's checkpoint holds, as PySlowFast validates."""
        step = self.trainer.position.global_iteration
        if step % self.period == 0 and self.last_validated != step:
            self.validate()

    def after_train(self) -> None:
        """The final point of the curve (unless the last iteration was just validated)."""
        if self.trainer.status not in ("finished", "stopped"):
            return  # preempted, or an error is on its way up
        if self.last_validated != self.trainer.position.global_iteration:
            self.validate()
