"""Built-in demo dataset: small synthetic H.264 videos whose classes need temporal context.

Each video shows a textured background with per-frame noise, a white disk moving in one of up
to 8 directions, a red and a blue square that flash once each `event_gap` frames apart, and
distractor flashes in other colours. The class is (direction, which flash comes first):
    label = 2 * direction + order, order 0 = red then blue, 1 = blue then red.
Direction is visible in any two frames; the order needs a clip whose window covers both
flashes, so clip length matters, and a larger `event_gap` makes short clips see the order
less often (the knob for clip-length experiments).

Videos are written with PyAV (libx264 when the wheel has it, see `video_writer`) under
`<cache_dir>/demo_<hash of params>/`, with Kinetics-style `path label` lists. Generation is
deterministic; a second call with the same parameters reuses the files (checked against
`manifest.json`), and concurrent callers (e.g. DDP ranks) do not clobber each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from videogn.data.video_writer import write_video

GENERATOR_VERSION = 2  # 2: x264 without mbtree, bit-reproducible (see video_writer.py)
DIRECTIONS = {  # name: (dy, dx); opposite pairs first, so 4 classes = right/left x 2 orders
    "right": (0, 1),
    "left": (0, -1),
    "down": (1, 0),
    "up": (-1, 0),
    "down_right": (1, 1),
    "up_left": (-1, -1),
    "down_left": (1, -1),
    "up_right": (-1, 1),
}
EVENT_COLOURS = {"red": (230, 30, 30), "blue": (30, 60, 230)}
DISTRACTOR_COLOURS = ((40, 200, 40), (230, 220, 40), (200, 40, 200))
SPLITS = ("train", "val")
# render(params, label, rng) -> (frames uint8 [T, H, W, 3], annotation)
Renderer = Callable[..., tuple[np.ndarray, dict]]


class SyntheticVideoSpec:
    """Checks and cache key shared by the parameter dataclasses of the synthetic datasets
    (this demo, :mod:`videogn.sweep.mini.tint_task`, :mod:`videogn.sweep.mini.flicker_task`):
    an even number of classes (a direction each, two kinds per direction), square frames, train
    and val videos per class. Subclasses add their own checks to `validate`."""

    generator_version: ClassVar[int]

    def validate(self) -> None:
        if self.num_classes % 2 or not 2 <= self.num_classes <= 2 * len(DIRECTIONS):
            raise ValueError(
                f"num_classes must be even, 2..{2 * len(DIRECTIONS)}, got {self.num_classes}"
            )
        if self.frame_size < 16 or self.frame_size % 2:
            raise ValueError(f"frame_size must be even and >= 16, got {self.frame_size}")
        if min(self.train_videos_per_class, self.val_videos_per_class) < 1:
            raise ValueError("need at least one train and one val video per class")

    def key(self) -> str:
        """Hash of the generator version and every field: the cache folder's suffix."""
        text = json.dumps({"version": self.generator_version, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class FlashEventsSpec(SyntheticVideoSpec):
    """A synthetic dataset whose class includes the order of two flashes `event_gap` frames
    apart, each `event_length` frames long (the demo and the mini task)."""

    def validate(self) -> None:
        super().validate()
        if self.event_gap < self.event_length or self.event_length < 1:
            raise ValueError(
                f"need event_gap ({self.event_gap}) >= event_length ({self.event_length}) >= 1"
            )
        if self.frames_per_video < self.event_gap + self.event_length:
            raise ValueError(
                f"frames_per_video={self.frames_per_video} cannot hold both events "
                f"(event_gap + event_length = {self.event_gap + self.event_length})"
            )


@dataclass(frozen=True)
class DemoParams(FlashEventsSpec):
    """Everything that determines the generated files (hashed into the cache key)."""

    generator_version: ClassVar[int] = GENERATOR_VERSION

    num_classes: int = 8
    train_videos_per_class: int = 24
    val_videos_per_class: int = 8
    frames_per_video: int = 48
    frame_size: int = 64
    fps: int = 25
    event_gap: int = 12
    event_length: int = 3
    speed: float = 1.25
    noise_std: float = 12.0
    distractors: int = 2
    seed: int = 0


@dataclass(frozen=True)
class DemoDataset:
    """Where a generated demo dataset lives; list paths are relative to `root`."""

    root: Path
    train_list: Path
    val_list: Path
    classes_file: Path
    num_classes: int
    params: DemoParams


def class_names(num_classes: int) -> list[str]:
    directions = list(DIRECTIONS)[: num_classes // 2]
    return [
        f"{direction}_{first}_then_{second}"
        for direction in directions
        for first, second in (("red", "blue"), ("blue", "red"))
    ]


def moving_disk_mask(
    num_frames: int,
    size: int,
    direction: int,
    speed: float,
    radius: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Where a disk moving along ``DIRECTIONS[direction]`` at ``speed`` pixels per frame is, as
    a bool mask [T, S, S]; it wraps around the frame, so it is always visible and keeps its
    direction. Draws its start position from ``rng``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = list(DIRECTIONS.values())[direction]
    step = speed / float(np.hypot(dy, dx))
    y0, x0 = rng.uniform(0, size, size=2)
    t = np.arange(num_frames, dtype=np.float32)[:, None, None]
    dist_y = np.abs(yy - (y0 + dy * step * t) % size)
    dist_x = np.abs(xx - (x0 + dx * step * t) % size)
    dist_y, dist_x = np.minimum(dist_y, size - dist_y), np.minimum(dist_x, size - dist_x)
    return dist_y**2 + dist_x**2 <= radius**2


def draw_moving_disk(
    video: np.ndarray, direction: int, speed: float, radius: float, rng: np.random.Generator
) -> None:
    """Paint a white disk (:func:`moving_disk_mask`) into ``video`` [T, S, S, 3]."""
    video[moving_disk_mask(video.shape[0], video.shape[1], direction, speed, radius, rng)] = 245.0


def render_video(
    params: DemoParams, label: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Frames uint8 [T, S, S, 3] of one video of class `label`, and its event annotation."""
    size, frames_n = params.frame_size, params.frames_per_video
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Grey-ish backgrounds keep the red and blue flashes visible on every video.
    base = (rng.uniform(60, 140) + rng.uniform(-15, 15, size=3)).astype(np.float32)
    tilt = rng.uniform(-1.0, 1.0, size=(2, 3)).astype(np.float32) * 40 / size
    background = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
    background += 10 * rng.standard_normal((size, size, 3), dtype=np.float32)
    video = params.noise_std * rng.standard_normal((frames_n, size, size, 3), dtype=np.float32)
    video += background

    draw_moving_disk(video, label // 2, params.speed, max(size / 12, 2.5), rng)

    first = int(rng.integers(0, frames_n - params.event_gap - params.event_length + 1))
    order = ("red", "blue") if label % 2 == 0 else ("blue", "red")
    events = [(first, EVENT_COLOURS[order[0]]), (first + params.event_gap, EVENT_COLOURS[order[1]])]
    for _ in range(params.distractors):
        colour = DISTRACTOR_COLOURS[int(rng.integers(len(DISTRACTOR_COLOURS)))]
        events.append((int(rng.integers(0, frames_n - params.event_length + 1)), colour))
    square = max(size // 6, 3)
    for start, colour in events:
        top, left = rng.integers(0, size - square + 1, size=2)
        video[start : start + params.event_length, top : top + square, left : left + square] = (
            colour
        )
    annotation = {"label": label, "first_event": first, "second_event": first + params.event_gap}
    return np.clip(video, 0, 255).astype(np.uint8), annotation


def _generate(spec, out_dir: Path, render: Renderer, seed_tail: tuple, quality: int) -> dict:
    # A spec may name its own classes (other tasks built on this generator do).
    names = spec.class_names() if hasattr(spec, "class_names") else class_names(spec.num_classes)
    (out_dir / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    annotations, encoder = {}, None
    for split_id, split in enumerate(SPLITS):
        per_class = getattr(spec, f"{split}_videos_per_class")
        lines = []
        for label, name in enumerate(names):
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([spec.seed, split_id, label, i, *seed_tail])
                frames, annotation = render(spec, label, rng)
                rel = f"{split}/{name}/{split}_{label:02d}_{i:04d}.mp4"
                encoder = write_video(out_dir / rel, frames, fps=spec.fps, gop=12, quality=quality)
                annotations[rel] = annotation
                lines.append(f"{rel} {label}")
        (out_dir / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "annotations.json").write_text(json.dumps(annotations, indent=0), encoding="utf-8")
    return {"encoder": encoder, "num_videos": len(annotations), "files": sorted(annotations)}


def _is_complete(root: Path, spec, version: int) -> bool:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # Compared as JSON holds them (a tuple field reads back as a list).
    params = json.loads(json.dumps(asdict(spec)))
    if manifest.get("params") != params or manifest.get("version") != version:
        return False
    return all((root / rel).is_file() for rel in manifest.get("files", ()))


def make_spec(params_cls, params: dict, what: str):
    """``params_cls(**params)``, validated, with unknown names listed against the known ones."""
    unknown = set(params) - set(params_cls.__dataclass_fields__)
    if unknown:
        raise TypeError(
            f"unknown {what} parameters {sorted(unknown)}; "
            f"known: {sorted(params_cls.__dataclass_fields__)}"
        )
    spec = params_cls(**params)
    spec.validate()
    return spec


def generate_cached(
    cache_dir: str | os.PathLike,
    prefix: str,
    spec,
    render: Renderer,
    *,
    version: int,
    seed_tail: tuple = (),
    quality: int = 23,
) -> Path:
    """Write a synthetic `path label` dataset to `<cache_dir>/<prefix>_<spec.key()>/` once.

    `spec` is a frozen dataclass with `num_classes`, `{train,val}_videos_per_class`, `fps`,
    `seed` and `key()`; `render(spec, label, rng)` gives a video's frames and annotation.
    Video i of class c in split s draws from `default_rng([seed, s, c, i, *seed_tail])`, so
    the files are the same on every machine. A finished copy (its manifest matches `spec` and
    `version`) is reused; generation happens in a staging folder that is renamed into place.
    """
    cache_dir = Path(cache_dir).expanduser()
    root = cache_dir / f"{prefix}_{spec.key()}"
    if _is_complete(root, spec, version):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=cache_dir))
    try:
        summary = _generate(spec, staging, render, seed_tail, quality)
        manifest = {"version": version, "params": asdict(spec), **summary}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        # Move the finished dataset into place; a concurrent finisher's identical copy wins.
        if root.exists() and not _is_complete(root, spec, version):
            shutil.rmtree(root, ignore_errors=True)  # leftover of an interrupted run
        try:
            os.rename(staging, root)
        except OSError:
            if not _is_complete(root, spec, version):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def ensure_demo_dataset(cache_dir: str | os.PathLike, **params) -> DemoDataset:
    """Generate the demo dataset under `cache_dir` unless an identical one is there already.

    Args:
        cache_dir: parent folder; the dataset goes to `<cache_dir>/demo_<params hash>/`.
        **params: fields of `DemoParams` (num_classes, train_videos_per_class, ...,
            frames_per_video, frame_size, event_gap, seed).
    """
    spec = make_spec(DemoParams, params, "demo")
    root = generate_cached(cache_dir, "demo", spec, render_video, version=GENERATOR_VERSION)
    return DemoDataset(
        root=root,
        train_list=root / "train.txt",
        val_list=root / "val.txt",
        classes_file=root / "classes.txt",
        num_classes=spec.num_classes,
        params=spec,
    )
