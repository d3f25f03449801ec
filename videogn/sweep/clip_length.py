"""Evaluate one checkpoint at several test clip lengths and numbers of test clips.

The I3D is fully convolutional in time, so a model trained on 32x2 clips runs on 8x8, 64x1 or
128x1 clips as they are, with the run's test head (``test.head``: the whole map pooled, or
the training clip's window slid over it, a softmax at each position) and the run's clip
positions (``test.clip_positions``). For each video the sweep:

1. works out the frames every setting needs: K clips (K in e.g. 1, 3, 5, 10) placed as the
   engine's test sampler places them, for every clip (8x8, 16x4, ...) whose window fits the
   video (a window longer than the video is not evaluated on it, rather than looped);
2. decodes the union of those frames ONCE (one ``decode`` call per video) and applies the
   test transform (short-side resize, crops, normalization) once to all of them;
3. slices each view out of that array, scores it (views shared by several K, e.g. the centre
   clip of K = 1, 3 and 5, are scored once) and averages softmax scores per (clip, K).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from videogn.data.decoders import VideoDecodeError, open_video
from videogn.data.lists import VideoRecord
from videogn.data.samplers import TestClipSampler
from videogn.data.transforms import FULL_FRAME, TestTransform
from videogn.engine.evaluate import POOLED, TestHead
from videogn.engine.metrics import topk_hits

logger = logging.getLogger(__name__)

DEFAULT_CLIPS = ("8x8", "16x4", "32x2", "64x1", "128x1")
DEFAULT_NUM_CLIPS = (1, 3, 5, 10)
MIN_FRAMES = 8


def parse_clip(text: str) -> tuple[int, int]:
    """ "32x2" -> (32, 2)."""
    try:
        frames, interval = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a clip is FRAMESxINTERVAL, e.g. 32x2; got {text!r}") from None
    if frames < MIN_FRAMES or interval < 1:
        raise ValueError(
            f"clip {text!r}: need at least {MIN_FRAMES} frames (the I3D downsamples time by 8) "
            "and a positive interval"
        )
    return frames, interval


def window(clip: tuple[int, int]) -> int:
    frames, interval = clip
    return (frames - 1) * interval + 1


@dataclass
class SettingScores:
    """Aggregated softmax scores of one (clip, K) setting, one row per video evaluated."""

    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    view_hits: int = 0
    num_views: int = 0
    too_short: int = 0  # videos shorter than the clip's window

    def summary(self) -> dict:
        out = {"videos_evaluated": len(self.labels), "videos_too_short": self.too_short}
        if not self.labels:
            return out
        hits = topk_hits(torch.from_numpy(np.stack(self.scores)), torch.tensor(self.labels))
        out.update(
            video_top1=100.0 * hits[1].float().mean().item(),
            video_top5=100.0 * hits[5].float().mean().item(),
            clip_top1=100.0 * self.view_hits / self.num_views,
        )
        return out


Setting = tuple[tuple[int, int], int]  # ((frames, interval), K clips)


def plan_views(
    num_frames: int, fps: float | None, samplers: dict[Setting, TestClipSampler]
) -> dict[Setting, list[np.ndarray]]:
    """Frame indices of every view, per (clip, K), for a video of ``num_frames`` frames;
    clips whose window exceeds the video are left out."""
    return {
        (clip, k): sampler(num_frames, fps)
        for (clip, k), sampler in samplers.items()
        if window(clip) <= num_frames
    }


@torch.no_grad()
def score_video(
    model: nn.Module,
    views_of: Callable[[np.ndarray], torch.Tensor],
    plan: dict[Setting, list[np.ndarray]],
    device: torch.device,
    views_per_batch: int,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    head: TestHead = POOLED,
) -> dict[Setting, torch.Tensor]:
    """Softmax scores [K * crops, classes] per setting; each distinct view scored once."""
    distinct: dict[tuple, np.ndarray] = {}
    for indices_list in plan.values():
        for indices in indices_list:
            distinct.setdefault(tuple(indices.tolist()), indices)
    by_length: dict[int, list[tuple]] = {}
    for key in distinct:
        by_length.setdefault(len(key), []).append(key)
    scored: dict[tuple, torch.Tensor] = {}
    for keys in by_length.values():  # a batch must share the clip length
        views = torch.stack([views_of(distinct[k]) for k in keys])  # [V, crops, C, T, H, W]
        flat = views.flatten(0, 1)
        prepare = prepare or (lambda clips: clips)
        probs = torch.cat(
            [
                head.probabilities(model, prepare(chunk.to(device)), contextlib.nullcontext).cpu()
                for chunk in flat.split(views_per_batch)
            ]
        ).unflatten(0, views.shape[:2])
        scored.update(zip(keys, probs, strict=True))
    return {
        setting: torch.cat([scored[tuple(ix.tolist())] for ix in indices_list])
        for setting, indices_list in plan.items()
    }


def clip_length_sweep(
    model: nn.Module,
    records: list[VideoRecord],
    *,
    samplers: dict[Setting, TestClipSampler],
    transform: TestTransform,
    device: torch.device,
    backend: str = "pyav",
    views_per_batch: int = 16,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    open_video_fn: Callable = open_video,
    progress: bool = True,
    head: TestHead = POOLED,
) -> tuple[dict[Setting, SettingScores], list[dict]]:
    """Evaluate ``model`` on ``records`` at every (clip, K); one decode per video.

    Args:
        samplers: the test sampler of each setting ((frames, interval), K).
        prepare: views on the device -> the model's input (uint8 views need it).
        head: how a view's softmax scores are formed (the run's ``test.head``).
        open_video_fn: opens a video (``videogn.data.decoders.open_video`` signature).

    Returns:
        (scores per setting, failures [{"path", "reason"}]).
    """
    model.eval()
    results = {setting: SettingScores() for setting in samplers}
    failures = []
    for record in tqdm(records, desc="clip-length sweep", disable=not progress):
        try:
            with open_video_fn(record.path, backend=backend) as video:
                plan = plan_views(video.num_frames, video.fps, samplers)
                if not plan:
                    raise VideoDecodeError(record.path, "shorter than every clip window")
                union = np.unique(np.concatenate([np.concatenate(v) for v in plan.values()]))
                frames = video.decode(union)
        except VideoDecodeError as err:
            failures.append({"path": record.path, "reason": err.reason})
            logger.warning("skipping %s: %s", record.path, err.reason)
            continue
        # One transform over every decoded frame; views are slices along time.
        all_views = transform(frames)  # [crops, C, U, H, W]

        def views_of(indices: np.ndarray, all_views=all_views, union=union) -> torch.Tensor:
            return all_views[:, :, torch.from_numpy(np.searchsorted(union, indices))]

        scores = score_video(model, views_of, plan, device, views_per_batch, prepare, head)
        for setting, acc in results.items():
            if setting not in scores:
                acc.too_short += 1
                continue
            probs = scores[setting]
            acc.scores.append(probs.mean(0).numpy())
            acc.labels.append(record.label)
            acc.view_hits += int((probs.argmax(1) == record.label).sum())
            acc.num_views += len(probs)
    return results, failures


# ------------------------------------------------------------------------------ checkpoint
def evaluate_checkpoint(
    checkpoint: str,
    *,
    clips: list[tuple[int, int]],
    num_clips: list[int],
    overrides: list[str] = (),
    max_videos: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Restore the checkpoint's run (its model, data, samplers and test transform), then sweep.

    Args:
        overrides: ``key=value`` replacing recorded settings (``data.root=...``,
            ``test.num_crops=3``, ``test.short_side=...``).

    Returns:
        a JSON-able dict: checkpoint, training clip, settings (one entry per (clip, K)),
        videos listed, failures.
    """
    from videogn.engine import distributed
    from videogn.engine.run import input_preparation, restore_run

    dist = distributed.DistInfo(device=distributed.resolve_device(device))
    run = restore_run(checkpoint, overrides, dist=dist, loader_workers=0)
    spec = run.spec
    spec.data.resolve(dist)
    records = spec.data.val_records(max_videos or None)
    results, failures = clip_length_sweep(
        run.model,
        records,
        samplers=setting_samplers(spec, clips, num_clips),
        transform=spec.test_transform(),
        device=dist.device,
        backend=spec.data.backend,
        views_per_batch=spec.test.views_per_batch,
        prepare=input_preparation(spec),
        progress=progress,
        head=spec.test.head,
    )
    return {
        "checkpoint": str(run.checkpoint),
        "train_clip": spec.samplers.clip,
        "norm": spec.model.norm,
        "num_crops": spec.test.num_crops,
        "head": spec.test.head.kind,
        "clip_positions": spec.test.clip_positions,
        "test_size": view_description(
            spec.test.num_crops, spec.test.short_side, spec.test.crop_size
        ),
        "videos_listed": len(records),
        "failures": failures,
        "settings": [
            {"clip": f"{c[0]}x{c[1]}", "num_clips": k, **acc.summary()}
            for (c, k), acc in results.items()
        ],
    }


def setting_samplers(spec, clips: list[tuple[int, int]], num_clips: list[int]) -> dict:
    """The test sampler of every (clip, K), with the run's short-video policy and clip
    positions (``spec``: the restored run's :class:`~videogn.engine.builders.RunSpec`)."""
    from videogn.engine.builders.sampler import build_samplers

    sampler_group = OmegaConf.create(spec.config["sampler"])
    return {
        (clip, k): build_samplers(
            sampler_group, num_test_clips=k, clip=clip, clip_positions=spec.test.clip_positions
        ).test
        for clip in clips
        for k in num_clips
    }


def view_description(num_crops, short_side: int, crop_size: int) -> str:
    """How the views are cut, for the report: "256/224" crops, or "256/full frame"."""
    return f"{short_side}/{'full frame' if num_crops == FULL_FRAME else crop_size}"


def sweep_markdown(summary: dict) -> str:
    """Rows: test clip; columns: number of test clips; cells: video top-1 (videos)."""
    settings = summary["settings"]
    clip_names = list(dict.fromkeys(s["clip"] for s in settings))
    counts = list(dict.fromkeys(s["num_clips"] for s in settings))
    by_key = {(s["clip"], s["num_clips"]): s for s in settings}
    lines = [
        "| test clip | " + " | ".join(f"{k} clip{'s' if k > 1 else ''}" for k in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for clip in clip_names:
        cells = []
        for k in counts:
            s = by_key[(clip, k)]
            if "video_top1" not in s:
                cells.append(f"*not evaluated ({s['videos_too_short']} videos too short)*")
                continue
            text = f"{s['video_top1']:.1f} / {s['video_top5']:.1f}"
            if s["videos_too_short"]:
                text += f" ({s['videos_evaluated']} videos; {s['videos_too_short']} too short)"
            cells.append(text)
        marker = " (training clip)" if clip == summary["train_clip"] else ""
        lines.append(f"| {clip.replace('x', '×')}{marker} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(summary: dict, path) -> None:
    """Video top-1 against the number of test clips, one line per test clip length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for clip in dict.fromkeys(s["clip"] for s in summary["settings"]):
        points = [
            (s["num_clips"], s["video_top1"])
            for s in summary["settings"]
            if s["clip"] == clip and "video_top1" in s
        ]
        if points:
            style = "-o" if clip == summary["train_clip"] else "--o"
            ax.plot(*zip(*points, strict=True), style, label=clip.replace("x", "×"))
    ax.set_xlabel("test clips per video")
    ax.set_ylabel("video top-1 (%)")
    ax.set_title(f"{summary['norm'].upper()} model trained on {summary['train_clip']}")
    ax.grid(alpha=0.3)
    ax.legend(title="test clip")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
