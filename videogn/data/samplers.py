"""Which frames make a clip: pure index logic, no I/O.

A clip is `num_frames` frames taken every `frame_interval` frames (32x2: a 64-frame window,
every second frame; 64x1: 64 consecutive frames). Indices follow `videogn.data.decoders`:
positions in presentation order.

Train: the window starts uniformly at random among all starts that fit, integers
    0 .. N - window, where window = (num_frames - 1) * frame_interval + 1.
Test, two rules for where the K clips start (``clip_positions``):
    "centered" (default): the centres of K equal parts of the valid start range [0, slack],
    slack = max(N - window, 0):  start_k = floor((2k + 1) * (slack + 1) / (2K)),  k = 0..K-1.
    K = 1 gives the centre clip; when there are fewer than K possible starts, starts repeat
    (always K clips, so every video yields the same number of views). No clip runs past the
    end of a video that is long enough.
    "nonlocal": the Non-local code's reader (video-nonlocal-net, caffe2_customized_ops/video/
    customized_video_io.cc): start_k = int(float32(N) / float32(K) * k) mod N, evaluated in
    float32 as the C++ does, and every frame index taken mod N, so the last clips wrap past
    the end to the first frames (whatever ``short_video`` says).
Short videos (N < window) start at frame 0 and are extended by a policy:
    "loop": wrap around to the first frame, index mod N;
    "repeat_last": hold the last frame.
Frame rate: with `target_fps` set, the interval is counted in frames at `target_fps`, so a
    60 fps and a 30 fps video give clips of the same duration. Source frame k of the clip is
    floor(k * frame_interval * fps / target_fps) frames after the start (the frame showing at
    that time, assuming constant frame rate at the video's average fps). Off by default.
"""

from __future__ import annotations

import numpy as np

SHORT_VIDEO_POLICIES = ("loop", "repeat_last")
CLIP_POSITIONS = ("centered", "nonlocal")


class _ClipGeometry:
    """Shared validation and per-video offsets for train and test samplers."""

    def __init__(
        self, num_frames: int, frame_interval: int, short_video: str, target_fps: float | None
    ):
        if int(num_frames) != num_frames or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        if int(frame_interval) != frame_interval or frame_interval < 1:
            raise ValueError(f"frame_interval must be a positive integer, got {frame_interval!r}")
        if short_video not in SHORT_VIDEO_POLICIES:
            raise ValueError(
                f"short_video must be one of {SHORT_VIDEO_POLICIES}, got {short_video!r}"
            )
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f"target_fps must be positive or None, got {target_fps!r}")
        self.num_frames = int(num_frames)
        self.frame_interval = int(frame_interval)
        self.short_video = short_video
        self.target_fps = target_fps

    def offsets(self, video_fps: float | None) -> np.ndarray:
        """Frame offsets of the clip relative to its start, in source frames."""
        steps = np.arange(self.num_frames, dtype=np.int64) * self.frame_interval
        if self.target_fps is None:
            return steps
        if video_fps is None or not video_fps > 0:
            raise ValueError(
                f"target_fps={self.target_fps} needs the video's fps, got {video_fps!r}"
            )
        # The epsilon keeps exact ratios (60 -> 30 fps) from flooring one frame short.
        return np.floor(steps * (video_fps / self.target_fps) + 1e-9).astype(np.int64)

    def place(self, start: int, offsets: np.ndarray, video_num_frames: int) -> np.ndarray:
        indices = start + offsets
        if indices[-1] < video_num_frames:
            return indices
        if self.short_video == "loop":
            return indices % video_num_frames
        return np.minimum(indices, video_num_frames - 1)

    @staticmethod
    def check_video(video_num_frames: int) -> int:
        if int(video_num_frames) != video_num_frames or video_num_frames < 1:
            raise ValueError(f"a video needs at least one frame, got {video_num_frames!r}")
        return int(video_num_frames)

    def describe(self) -> str:
        fps = "" if self.target_fps is None else f", target_fps={self.target_fps}"
        return (
            f"num_frames={self.num_frames}, frame_interval={self.frame_interval}, "
            f"short_video={self.short_video!r}{fps}"
        )


class TrainClipSampler(_ClipGeometry):
    """One clip from a uniformly random start; see the module docstring for the rules."""

    def __init__(
        self,
        num_frames: int,
        frame_interval: int,
        short_video: str = "loop",
        target_fps: float | None = None,
    ):
        super().__init__(num_frames, frame_interval, short_video, target_fps)

    def __call__(
        self, video_num_frames: int, rng: np.random.Generator, video_fps: float | None = None
    ) -> np.ndarray:
        """Frame indices [num_frames] of one random clip of a video with `video_num_frames`."""
        video_num_frames = self.check_video(video_num_frames)
        offsets = self.offsets(video_fps)
        slack = video_num_frames - 1 - int(offsets[-1])
        start = int(rng.integers(0, slack + 1)) if slack > 0 else 0
        return self.place(start, offsets, video_num_frames)

    def __repr__(self) -> str:
        return f"TrainClipSampler({self.describe()})"


class TestClipSampler(_ClipGeometry):
    """K clips spaced uniformly over the video; see the module docstring for the formula."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        num_frames: int,
        frame_interval: int,
        num_clips: int = 10,
        short_video: str = "loop",
        target_fps: float | None = None,
        clip_positions: str = "centered",
    ):
        super().__init__(num_frames, frame_interval, short_video, target_fps)
        if int(num_clips) != num_clips or num_clips < 1:
            raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}")
        if clip_positions not in CLIP_POSITIONS:
            raise ValueError(
                f"test.clip_positions must be one of {CLIP_POSITIONS}, got {clip_positions!r}"
            )
        self.num_clips = int(num_clips)
        self.clip_positions = clip_positions

    def starts(self, video_num_frames: int, video_fps: float | None = None) -> np.ndarray:
        """Start frame of each of the K clips."""
        video_num_frames = self.check_video(video_num_frames)
        k = np.arange(self.num_clips, dtype=np.int64)
        if self.clip_positions == "nonlocal":
            # float32 like the C++ (frame_gaps * k), so a start never differs by the rounding.
            gap = np.float32(video_num_frames) / np.float32(self.num_clips)
            return (gap * k.astype(np.float32)).astype(np.int64) % video_num_frames
        offsets = self.offsets(video_fps)
        slack = max(video_num_frames - 1 - int(offsets[-1]), 0)
        return (2 * k + 1) * (slack + 1) // (2 * self.num_clips)

    def __call__(self, video_num_frames: int, video_fps: float | None = None) -> list[np.ndarray]:
        """K arrays of frame indices [num_frames], in clip order."""
        offsets = self.offsets(video_fps)
        n = int(video_num_frames)
        starts = self.starts(video_num_frames, video_fps)
        if self.clip_positions == "nonlocal":
            return [(int(start) + offsets) % n for start in starts]
        return [self.place(int(start), offsets, n) for start in starts]

    def __repr__(self) -> str:
        return (
            f"TestClipSampler(num_clips={self.num_clips}, {self.describe()}, "
            f"clip_positions={self.clip_positions!r})"
        )
