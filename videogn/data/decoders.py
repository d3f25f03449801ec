"""Video decoding behind one interface: `decode(path, frame_indices) -> uint8 [T, H, W, 3]` RGB.

Frame index semantics (both backends):
    Frame i is the i-th frame of the chosen video stream in presentation order: the packet with
    the i-th smallest presentation timestamp. An index is a position, not a time. When a stream
    has no usable timestamps (raw elementary streams, AVI, whose packed B-frames carry
    non-monotonic timestamps), frame i is the i-th frame the decoder outputs from the start; on
    healthy files the two definitions agree.
Stream: the video stream ffmpeg's `av_find_best_stream` picks (PyAV `streams.best("video")`).
Rotation: frames are returned as displayed: display-matrix rotation (multiples of 90 degrees)
    is applied, as decord does, so a 90-degree phone video comes back portrait in both backends.
Errors: anything that prevents decoding (missing, empty, truncated or non-video files, decoder
    errors, indices past the end) raises `VideoDecodeError(path, reason)`.

The PyAV backend is the reference; the decord backend uses decord where it is right and falls
back to the PyAV backend where decord is known to be wrong (see `decord_backend`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

BACKEND_NAMES = ("pyav", "decord")


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; carries the path and a human-readable reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions back to the main process.
        return (type(self), (self.path, self.reason))


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
    """An opened video: cheap `num_frames`/`fps`, then any number of `decode` calls."""

    path: str
    num_frames: int
    fps: float

    def decode(self, frame_indices) -> np.ndarray: ...

    def info(self) -> VideoInfo: ...

    def close(self) -> None: ...


def open_video(path: str | os.PathLike, backend: str = "pyav", threads: int = 1) -> VideoReader:
    """Open `path` with a backend; use as a context manager. Raises VideoDecodeError."""
    if backend == "pyav":
        from videogn.data.pyav_backend import PyAVReader

        return PyAVReader(path, threads=threads)
    if backend == "decord":
        from videogn.data.decord_backend import DecordReader

        return DecordReader(path, threads=threads)
    raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKEND_NAMES}")


def decode(
    path: str | os.PathLike, frame_indices, backend: str = "pyav", threads: int = 1
) -> np.ndarray:
    """Decode the given frames of a video as uint8 RGB [T, H, W, 3], in the order asked.

    Indices may repeat and come in any order; the video is decoded once, from the keyframe
    before the first needed frame to the last needed frame.
    """
    with open_video(path, backend=backend, threads=threads) as video:
        return video.decode(frame_indices)


def probe(path: str | os.PathLike, backend: str = "pyav", threads: int = 1) -> VideoInfo:
    """Return VideoInfo for a video (decodes its first frame to learn the displayed size)."""
    with open_video(path, backend=backend, threads=threads) as video:
        return video.info()


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
