"""The mini Table 8 task: a variant of the demo videos in which temporal context decides.

As in :mod:`videogn.data.demo`, the class is (motion direction of a disk, order of a red and a
blue flash): ``label = 2 * direction + order``. The difference is the flashes: here each one
tints the WHOLE frame for ``event_length`` frames, ``event_gap`` frames apart, instead of
lighting a small square somewhere. A tint is visible at every position, so the order becomes
a local space-time pattern that even a tiny I3D can pick up, but only when its clip spans
both flashes: a clip shorter than ``event_gap + event_length`` frames can never tell the
order, a longer one can whenever it lands on both. Distractor tints (green, yellow) at random
times make the colour matter. The direction is visible in any few frames, so half of the
task is easy for every clip length and the other half needs time.

Videos are real H.264 files (written like the demo's), with ``path label`` lists, generated
once per parameter set under ``<cache_dir>/mini_<hash>/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from videogn.data.demo import (
    EVENT_COLOURS,
    FlashEventsSpec,
    draw_moving_disk,
    generate_cached,
    make_spec,
)

GENERATOR_VERSION = 2  # 2: x264 without mbtree, bit-reproducible (see video_writer.py)
DISTRACTOR_TINTS = ((40, 200, 40), (230, 220, 40))


@dataclass(frozen=True)
class MiniTaskParams(FlashEventsSpec):
    """Everything that determines the generated videos (hashed into the cache key)."""

    generator_version: ClassVar[int] = GENERATOR_VERSION

    num_classes: int = 8
    train_videos_per_class: int = 64
    val_videos_per_class: int = 32
    frames_per_video: int = 32
    frame_size: int = 32
    event_gap: int = 8
    event_length: int = 2
    tint: float = 0.6  # weight of the flash colour over the frame
    distractors: int = 1
    speed: float = 1.25  # pixels per frame of the moving disk
    noise_std: float = 10.0
    fps: int = 25
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.tint <= 1.0:
            raise ValueError(f"tint must be in (0, 1], got {self.tint}")


def render_video(
    params: MiniTaskParams, label: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Frames uint8 [T, S, S, 3] of one video of class ``label``, and its event annotation."""
    size, num_frames = params.frame_size, params.frames_per_video
    base = (rng.uniform(70, 130) + rng.uniform(-15, 15, size=3)).astype(np.float32)
    background = base + 10 * rng.standard_normal((size, size, 3), dtype=np.float32)
    video = params.noise_std * rng.standard_normal((num_frames, size, size, 3), dtype=np.float32)
    video += background

    draw_moving_disk(video, label // 2, params.speed, max(size / 10, 2.5), rng)

    last_start = num_frames - params.event_gap - params.event_length
    first = int(rng.integers(0, last_start + 1))
    order = ("red", "blue") if label % 2 == 0 else ("blue", "red")
    events = [(first, EVENT_COLOURS[order[0]]), (first + params.event_gap, EVENT_COLOURS[order[1]])]
    for _ in range(params.distractors):
        colour = DISTRACTOR_TINTS[int(rng.integers(len(DISTRACTOR_TINTS)))]
        events.append((int(rng.integers(0, num_frames - params.event_length + 1)), colour))
    for start, colour in events:
        span = slice(start, start + params.event_length)
        video[span] = (1 - params.tint) * video[span] + params.tint * np.float32(colour)
    annotation = {"label": label, "first_event": first, "second_event": first + params.event_gap}
    return np.clip(video, 0, 255).astype(np.uint8), annotation


@dataclass(frozen=True)
class MiniTaskDataset:
    """Where a generated dataset lives (list paths are relative to ``root``)."""

    root: Path
    train_list: Path
    val_list: Path
    num_classes: int


def ensure_mini_task(cache_dir: str | os.PathLike, **params) -> MiniTaskDataset:
    """Generate the mini task under ``cache_dir`` unless an identical copy is there already.

    Args:
        cache_dir: parent folder; the videos go to ``<cache_dir>/mini_<params hash>/``.
        **params: fields of :class:`MiniTaskParams`.
    """
    spec = make_spec(MiniTaskParams, params, "mini task")
    # seed_tail 7 and quality 20 keep the files of the runs recorded in docs/mini_table8.md.
    root = generate_cached(
        cache_dir, "mini", spec, render_video, version=GENERATOR_VERSION, seed_tail=(7,), quality=20
    )
    return MiniTaskDataset(root, root / "train.txt", root / "val.txt", spec.num_classes)
