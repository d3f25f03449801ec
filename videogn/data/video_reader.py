"""What every decoder backend shares: the reader protocol, its errors and index checks.

A leaf module: the backends (`pyav_backend`, `decord_backend`) and the front door
(`decoders`) import it, and it imports none of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; carries the path and a human-readable reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions back to the main process.
        return (type(self), (self.path, self.reason))


class BackendNotInstalledError(ImportError):
    """A decoder backend's library is missing: a setup problem, never a bad video."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as seen by a backend.

    Attributes:
        num_frames: frames in the chosen stream (packets; a damaged file may decode fewer).
        fps: average frame rate (frames per second).
        width, height: size of the returned frames, i.e. after rotation.
        rotation: counter-clockwise degrees applied to stored frames (0, 90, 180 or 270).
        keyframes: frame indices of keyframes (empty when the backend does not know them).
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    duration: float | None
    codec: str
    stream_index: int
    num_video_streams: int
    keyframes: tuple[int, ...]
    backend: str


class VideoReader(Protocol):
    """An opened video: cheap `num_frames`/`fps`, then any number of `decode` calls.

    A backend is a class with this shape, constructed as `Reader(path, threads=...)`; its
    `check_installed()` raises BackendNotInstalledError when its library is missing.
    """

    path: str
    num_frames: int
    fps: float

    @classmethod
    def check_installed(cls) -> None: ...

    def decode(self, frame_indices) -> np.ndarray: ...

    def info(self) -> VideoInfo: ...

    def close(self) -> None: ...


def validate_frame_indices(frame_indices, num_frames: int, path: str) -> np.ndarray:
    """Check indices against a video's length; returns them as a 1-D int64 array.

    Negative or non-integer indices are caller bugs (ValueError); indices past the end are a
    property of the file (VideoDecodeError), since headers can overstate a video's length.
    """
    indices = np.asarray(frame_indices)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(
            f"frame_indices must be a non-empty 1-D sequence, got shape {indices.shape}"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"frame_indices must be integers, got dtype {indices.dtype}")
    indices = indices.astype(np.int64, copy=False)
    if indices.min() < 0:
        raise ValueError(f"frame indices must be >= 0, got {int(indices.min())}")
    if indices.max() >= num_frames:
        raise VideoDecodeError(
            path, f"frame {int(indices.max())} requested but the video has {num_frames} frames"
        )
    return indices


def gather_frames(unique_frames: np.ndarray, unique_indices: np.ndarray, indices: np.ndarray):
    """Expand frames decoded once per unique index to the (possibly repeated) order asked."""
    if unique_indices.shape == indices.shape and np.array_equal(unique_indices, indices):
        return unique_frames
    return unique_frames[np.searchsorted(unique_indices, indices)]
