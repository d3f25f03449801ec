"""Multi-view testing: K clips x S crops per video, softmax scores aggregated per video.

Each process evaluates its own disjoint share of the videos (no padding, so every video counts
exactly once); rank 0 gathers the per-video results and writes ``results.json`` (accuracies,
videos evaluated out of listed, failures with reasons) and ``video_scores.npz`` (the aggregated
scores of every evaluated video, for later analysis).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from videogn.engine import distributed
from videogn.engine.metrics import per_class_accuracy, topk_hits

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
SCORES_FILE = "video_scores.npz"

AGGREGATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda probs: probs.mean(dim=0),
    "sum": lambda probs: probs.sum(dim=0),
    "max": lambda probs: probs.max(dim=0).values,
}


TEST_HEADS = ("pooled", "fully_conv")


@dataclass(frozen=True)
class TestHead:
    """How a view's class probabilities come out of the network at test time.

    "pooled": the average of the whole res5 map, one softmax. "fully_conv": the Non-local
    test (and PySlowFast's): an average pool of ``window`` (T, H, W), the res5 map of a
    training clip, at stride 1; a softmax at every position; the mean of those. The two agree
    when the view's res5 map is the window (a training-sized view).
    """

    __test__ = False  # not a pytest test class despite the name

    kind: str = "pooled"
    window: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.kind not in TEST_HEADS:
            raise ValueError(f"test.head must be one of {TEST_HEADS}, got {self.kind!r}")
        if self.kind == "fully_conv" and (
            self.window is None or len(self.window) != 3 or min(self.window) < 1
        ):
            raise ValueError(
                f"test.head=fully_conv needs a (T, H, W) window >= 1, got {self.window}"
            )

    def probabilities(self, model: nn.Module, x: torch.Tensor, forward_context) -> torch.Tensor:
        """Softmax scores [N, classes] of the prepared views ``x`` (model in eval mode)."""
        if self.kind == "pooled":
            with forward_context():
                logits = model(x)
            return logits.float().softmax(dim=1)
        if not hasattr(model, "forward_features") or not hasattr(model.head, "window_logits"):
            raise TypeError(f"test.head=fully_conv needs an I3D ResNet, got {type(model).__name__}")
        with forward_context():
            logits = model.head.window_logits(model.forward_features(x), self.window)
        return logits.float().softmax(dim=1).mean(dim=(2, 3, 4))


POOLED = TestHead()  # the default head: global average pool, one softmax


@dataclass(frozen=True)
class TestOptions:
    """The multi-view test protocol: K clips x S crops per video, softmax scores aggregated."""

    __test__ = False  # not a pytest test class despite the name

    num_clips: int = 10
    num_crops: int = 1
    short_side: int = 256
    crop_size: int = 256
    aggregate: str = "mean"  # a key of AGGREGATIONS
    views_per_batch: int = 10
    num_workers: int = 2
    max_videos: int | None = None  # only the first N listed videos (smoke runs)
    head: TestHead = POOLED
    clip_positions: str = "centered"  # "centered" | "nonlocal" (videogn.data.samplers)


@dataclass
class VideoResult:
    """One video's outcome: aggregated scores and per-view hit counts, or the failure reason."""

    index: int
    label: int
    scores: np.ndarray | None = None  # [num_classes] aggregated softmax
    num_views: int = 0
    view_top1_hits: int = 0
    view_top5_hits: int = 0
    view_size: str = ""  # "HxW" of its views (the full frame's differs between videos)
    error: str | None = None


@torch.no_grad()
def score_views(
    model: nn.Module,
    views: torch.Tensor,
    views_per_batch: int,
    forward_context,
    device,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    head: TestHead = POOLED,
) -> torch.Tensor:
    """Softmax scores [V, num_classes] of a video's views, ``views_per_batch`` at a time,
    by ``head`` (pooled or fully convolutional)."""
    probs = []
    for chunk in views.split(views_per_batch):
        chunk = chunk.to(device, non_blocking=True)
        if prepare is not None:
            chunk = prepare(chunk)
        elif chunk.dtype == torch.uint8:
            raise ValueError(
                "uint8 test views need normalizing before the model: pass prepare "
                "(videogn.engine.trainer.model_input) or a float32 test transform"
            )
        probs.append(head.probabilities(model, chunk, forward_context).cpu())
    return torch.cat(probs)


def evaluate_shard(
    model: nn.Module,
    dataset: Dataset,
    indices: list[int],
    *,
    device: torch.device,
    aggregate: str = "mean",
    views_per_batch: int = 10,
    num_workers: int = 2,
    forward_context=contextlib.nullcontext,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    head: TestHead = POOLED,
) -> list[VideoResult]:
    """Evaluate the videos ``indices`` of a test dataset on this process.

    Args:
        dataset: items are dicts with "views" [V, C, T, H, W], "label", "index", "error".
        aggregate: "mean", "sum" or "max" of the views' softmax scores.
        forward_context: a context-manager factory wrapped around each forward (autocast).
        prepare: applied to each chunk of views on the device, before the forward
            (uint8 views -> normalized float, memory format).
        head: how each view's softmax scores are formed (pooled or fully convolutional).
    """
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{aggregate}'; valid: {', '.join(AGGREGATIONS)}")
    model.eval()
    # batch_size=None: one video per item, its views already stacked by the dataset.
    loader = DataLoader(Subset(dataset, indices), batch_size=None, num_workers=num_workers)
    results = []
    for item in tqdm(loader, total=len(indices), desc="test", disable=not progress):
        label = int(item["label"])
        index = int(item["index"])
        if item.get("error"):
            results.append(VideoResult(index, label, error=str(item["error"])))
            continue
        probs = score_views(
            model, item["views"], views_per_batch, forward_context, device, prepare, head
        )
        hits = topk_hits(probs, torch.full((len(probs),), label))
        results.append(
            VideoResult(
                index,
                label,
                scores=AGGREGATIONS[aggregate](probs).numpy(),
                num_views=len(probs),
                view_top1_hits=int(hits[1].sum()),
                view_top5_hits=int(hits[5].sum()),
                view_size="x".join(map(str, item["views"].shape[-2:])),
            )
        )
    return results


def gather_results(results: list[VideoResult]) -> list[VideoResult]:
    """All processes' results, sorted by video index (rank 0 gets them; others too)."""
    merged = [r for part in distributed.all_gather_objects(results) for r in part]
    return sorted(merged, key=lambda r: r.index)


def summarize(
    results: list[VideoResult], *, num_listed: int, num_classes: int, paths: list[str]
) -> dict:
    """Clip- and video-level top-1/top-5, per-class accuracy, counts and failures.

    ``video_top1``/``video_top5`` are over the videos evaluated; ``video_top1_listed``/
    ``video_top5_listed`` over all ``num_listed`` videos, those that failed counted wrong.
    """
    ok = [r for r in results if r.error is None]
    failures = [
        {"path": paths[r.index], "label": r.label, "reason": r.error}
        for r in results
        if r.error is not None
    ]
    summary = {
        "videos_listed": num_listed,
        "videos_evaluated": len(ok),
        "videos_failed": len(failures),
        "failures": failures,
    }
    if not ok:
        return summary
    scores = torch.from_numpy(np.stack([r.scores for r in ok]))
    labels = torch.tensor([r.label for r in ok])
    hits = topk_hits(scores, labels)
    num_views = sum(r.num_views for r in ok)
    predictions = scores.argmax(dim=1).numpy()
    per_class = per_class_accuracy(predictions, labels.numpy(), num_classes)
    present = [a for a in per_class if a is not None]
    summary.update(
        video_top1=100.0 * hits[1].float().mean().item(),
        video_top5=100.0 * hits[5].float().mean().item(),
        # Over every listed video, a failed one counted wrong: the Non-local code's denominator,
        # comparable across runs that lost different videos.
        video_top1_listed=100.0 * hits[1].sum().item() / num_listed,
        video_top5_listed=100.0 * hits[5].sum().item() / num_listed,
        clip_top1=100.0 * sum(r.view_top1_hits for r in ok) / num_views,
        clip_top5=100.0 * sum(r.view_top5_hits for r in ok) / num_views,
        mean_class_accuracy=float(np.mean(present)),
        per_class_accuracy=per_class,
        views_per_video=num_views / len(ok),
        view_sizes=dict(Counter(r.view_size for r in ok).most_common()),  # videos per size
    )
    return summary


def write_results(
    out_dir: str | Path, summary: dict, results: list[VideoResult], paths: list[str]
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``video_scores.npz`` (evaluated videos only) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    results_path.write_text(json.dumps(summary, indent=2) + "\n")
    ok = [r for r in results if r.error is None]
    num_classes = len(ok[0].scores) if ok else 0
    scores_path = out_dir / SCORES_FILE
    np.savez_compressed(
        scores_path,
        paths=np.array([paths[r.index] for r in ok], dtype=str),
        labels=np.array([r.label for r in ok], dtype=np.int64),
        scores=np.stack([r.scores for r in ok]) if ok else np.zeros((0, num_classes), np.float32),
    )
    return results_path, scores_path
