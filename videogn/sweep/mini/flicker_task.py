"""The mini Table 8 task (take 2): a disk moving over a natural photo, steady or flickering.

``label = 2 * direction + flicker``: 4 motion directions x {steady, flickering}. It is built
for the two properties Table 8 is about:

1. **Clips differ strongly from one another**, so BatchNorm's statistics over 2-4 clips are
   noisy: every video's background is a random crop (random photo, random scale) of the
   scikit-image photos the 2D stage was trained on, with its own contrast (x0.15-0.8),
   brightness (+-0.25), colour cast (per-channel gain 0.6-1.4) and noise level; the disk has
   a random size (radius 5-8) and speed (1.0-1.8 pixels per frame). The backgrounds
   come from a pool of ``background_pool`` that all classes and both splits draw from, so a
   background carries no label: a first version with a fresh background per video was
   memorized (photo-trained features tell crops apart easily) and tested at chance.
2. **The label depends on temporal detail that a denser clip sees better.** The disk is grey,
   brighter or darker than the background; a flickering disk alternates between a bright and a
   dark level (A and B), either every frame (period 2: A B A B ...) or every two
   frames (period 4: A A B B ...), half of the flickering videos each. A 16x1 clip sees both
   flickers. An 8x2 clip (every other frame, the same window) sees the period-4 flicker as
   A B A B, but the period-2 flicker as a steady A or a steady B, depending on the phase, which
   is exactly what a steady disk looks like (steady disks show A or B, at random, so the two
   cases are the same in distribution). So 8x2 can reach about 75% on the flicker half of the
   label and 16x1 about 100%.

The direction is visible in any few frames, at both clip densities. Videos are real H.264
files with ``path label`` lists (the demo's writer), generated once per parameter set under
``<cache_dir>/flicker_<hash>/``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from videogn.data.demo import (
    DIRECTIONS,
    SyntheticVideoSpec,
    generate_cached,
    make_spec,
    moving_disk_mask,
)

GENERATOR_VERSION = 3


@dataclass(frozen=True)
class FlickerTaskParams(SyntheticVideoSpec):
    """Everything that determines the generated videos (hashed into the cache key)."""

    generator_version: ClassVar[int] = GENERATOR_VERSION

    num_classes: int = 8
    train_videos_per_class: int = 256
    val_videos_per_class: int = 32
    frames_per_video: int = 24
    frame_size: int = 48
    flicker_periods: tuple[int, ...] = (2, 4)
    disk_contrast: float = 0.35  # |disk grey level - background mean| (0-1 units), at least
    background_pool: int = 64  # backgrounds shared by all classes and both splits
    background_contrast: tuple[float, float] = (0.15, 0.8)  # range of the photo's contrast factor
    disk_radius: tuple[float, float] = (5.0, 8.0)  # range of the disk's radius in pixels
    fps: int = 25
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        if not self.flicker_periods or any(p < 2 or p % 2 for p in self.flicker_periods):
            raise ValueError(f"flicker_periods must be even and >= 2, got {self.flicker_periods}")
        if self.background_pool < 1:
            raise ValueError(f"background_pool must be >= 1, got {self.background_pool}")
        if not 0.0 < self.disk_contrast <= 0.5:
            raise ValueError(f"disk_contrast must be in (0, 0.5], got {self.disk_contrast}")

    def class_names(self) -> list[str]:
        directions = list(DIRECTIONS)[: self.num_classes // 2]
        return [f"{d}_{kind}" for d in directions for kind in ("steady", "flicker")]


@functools.lru_cache(maxsize=1)
def _photos() -> torch.Tensor:
    from videogn.sweep.mini.pretrain2d import load_photos

    return load_photos()


def background(
    size: int, rng: np.random.Generator, contrast=(0.15, 0.8)
) -> tuple[np.ndarray, dict]:
    """A random crop of a random photo, with its own contrast, brightness and colour cast:
    float32 [S, S, 3] in 0-1 units (not clipped yet)."""
    photos = _photos()
    index = int(rng.integers(len(photos)))
    side = float(rng.uniform(size, 3.5 * size))
    top, left = rng.uniform(0, photos.shape[-1] - side, size=2)
    region = photos[index : index + 1, :, int(top) : int(top + side), int(left) : int(left + side)]
    image = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True)[0]
    image = image.permute(1, 2, 0).numpy()
    look = {
        "photo": index,
        "contrast": float(rng.uniform(*contrast)),
        "brightness": float(rng.uniform(-0.25, 0.25)),
        "gain": rng.uniform(0.6, 1.4, size=3).round(3).tolist(),
        "noise": float(rng.uniform(0.01, 0.06)),
    }
    mean = image.mean()
    image = (image - mean) * look["contrast"] + mean
    image = image * np.float32(look["gain"]) + look["brightness"]
    return image.astype(np.float32), look


def disk_colours(rng: np.random.Generator, contrast: float, background_mean: float) -> np.ndarray:
    """The disk's two grey levels [2, 3] (A, B): one brighter and one darker than the
    background's mean by at least ``contrast`` (as far as 0-1 allows), in random order. A
    flickering disk alternates between them; a steady one shows one of them."""
    step = rng.uniform(contrast, contrast + 0.15)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    levels = [background_mean + sign * step, background_mean - sign * step]
    return np.clip(np.repeat(np.array(levels, np.float32)[:, None], 3, 1), 0, 1)


def colour_states(label: int, num_frames: int, periods, rng: np.random.Generator) -> tuple:
    """Per frame, which of the two colours the disk shows; and the flicker period (0: steady)."""
    if label % 2 == 0:  # steady: A or B throughout, at random
        return np.full(num_frames, int(rng.integers(2))), 0
    period = int(periods[int(rng.integers(len(periods)))])
    phase = int(rng.integers(period))
    frames = np.arange(num_frames)
    return ((frames + phase) // (period // 2)) % 2, period


def render_video(
    params: FlickerTaskParams, label: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Frames uint8 [T, S, S, 3] of one video of class ``label``, and what it holds."""
    size, num_frames = params.frame_size, params.frames_per_video
    # Backgrounds come from a pool that every class draws from, so a background says nothing
    # about the label: a net that memorizes backgrounds (easy with photo-trained features)
    # learns nothing that transfers; only the disk carries the class.
    look_id = int(rng.integers(params.background_pool))
    look_rng = np.random.default_rng([params.seed, 0xB6, look_id])
    image, look = background(size, look_rng, params.background_contrast)
    video = image[None] + look["noise"] * rng.standard_normal(
        (num_frames, size, size, 3), dtype=np.float32
    )
    speed, radius = float(rng.uniform(1.0, 1.8)), float(rng.uniform(*params.disk_radius))
    mask = moving_disk_mask(num_frames, size, label // 2, speed, radius, rng)
    colours = disk_colours(rng, params.disk_contrast, float(np.clip(image, 0, 1).mean()))
    states, period = colour_states(label, num_frames, params.flicker_periods, rng)
    for t in range(num_frames):
        video[t][mask[t]] = colours[states[t]]
    annotation = {"label": label, "flicker_period": period, "speed": speed, "look": look_id, **look}
    return (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8), annotation


@dataclass(frozen=True)
class FlickerTaskDataset:
    """Where a generated dataset lives (list paths are relative to ``root``)."""

    root: Path
    train_list: Path
    val_list: Path
    num_classes: int


def ensure_flicker_task(cache_dir: str | os.PathLike, **params) -> FlickerTaskDataset:
    """Generate the task under ``cache_dir`` unless an identical copy is there already.

    Args:
        cache_dir: parent folder; the videos go to ``<cache_dir>/flicker_<params hash>/``.
        **params: fields of :class:`FlickerTaskParams`.
    """
    for key in ("flicker_periods", "background_contrast", "disk_radius"):
        if key in params:
            params = {**params, key: tuple(params[key])}
    spec = make_spec(FlickerTaskParams, params, "flicker task")
    root = generate_cached(
        cache_dir, "flicker", spec, render_video, version=GENERATOR_VERSION, quality=18
    )
    return FlickerTaskDataset(root, root / "train.txt", root / "val.txt", spec.num_classes)
