"""The ``sampler`` group -> the clip samplers of training and of the multi-view test.

One builder for every user (training, ``videogn-test``, the clip-length sweep, predict), so
the clip geometry and the short-video policy are the same wherever clips are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from videogn.config import enum_value
from videogn.data.samplers import TestClipSampler, TrainClipSampler


@dataclass(frozen=True)
class ClipSamplers:
    """Training draws one random clip per video; the test takes ``num_clips`` uniform ones."""

    train: TrainClipSampler
    test: TestClipSampler

    @property
    def clip(self) -> str:
        """ "32x2": frames x interval."""
        return f"{self.train.num_frames}x{self.train.frame_interval}"


def build_samplers(
    sampler_cfg: DictConfig,
    *,
    num_test_clips: int,
    clip: tuple[int, int] | None = None,
    clip_positions: str = "centered",
) -> ClipSamplers:
    """Samplers of ``sampler_cfg``.

    Args:
        num_test_clips: clips per video at test time (``test.num_clips``).
        clip: (frames, interval) replacing the group's, for sweeps over clip lengths.
        clip_positions: where the test clips start (``test.clip_positions``: "centered" or
            "nonlocal", see :mod:`videogn.data.samplers`).
    """
    frames, interval = clip or (sampler_cfg.num_frames, sampler_cfg.frame_interval)
    short_video = enum_value(sampler_cfg.short_video)
    return ClipSamplers(
        train=TrainClipSampler(frames, interval, short_video=short_video),
        test=TestClipSampler(
            frames,
            interval,
            num_clips=num_test_clips,
            short_video=short_video,
            clip_positions=clip_positions,
        ),
    )
