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
    errors, indices past the end) raises `VideoDecodeError(path, reason)`. A backend whose
    library is missing raises `BackendNotInstalledError` (an ImportError) with an install hint.

The PyAV backend is the reference; the decord backend uses decord where it is right and falls
back to the PyAV backend where decord is known to be wrong (see `decord_backend`). Backends are
registered in `BACKENDS` by name; what they share lives in `video_reader`.
"""

from __future__ import annotations

import os

import numpy as np

from videogn.data.decord_backend import DecordReader
from videogn.data.pyav_backend import PyAVReader
from videogn.data.video_reader import (
    BackendNotInstalledError,
    VideoDecodeError,
    VideoInfo,
    VideoReader,
)

__all__ = [
    "BACKENDS",
    "BackendNotInstalledError",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "decode",
    "get_backend",
    "open_video",
    "probe",
]

# name -> reader class (`Reader(path, threads=...)`); the config schema's choices come from here.
BACKENDS: dict[str, type[VideoReader]] = {"pyav": PyAVReader, "decord": DecordReader}


def get_backend(name: str) -> type[VideoReader]:
    """The reader class registered as `name`, after checking that its library is installed.

    Raises ValueError for an unknown name (listing the valid ones) and
    BackendNotInstalledError, with an install hint, when the backend's library is missing.
    """
    try:
        reader = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown video backend {name!r}; choose one of: {', '.join(BACKENDS)}"
        ) from None
    reader.check_installed()
    return reader


def open_video(path: str | os.PathLike, backend: str = "pyav", threads: int = 1) -> VideoReader:
    """Open `path` with a backend; use as a context manager. Raises VideoDecodeError."""
    return get_backend(backend)(path, threads=threads)


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
