"""decord backend: `VideoReader.get_batch`, with the PyAV backend as a safety net.

decord (0.6, built on FFmpeg 4.1) decodes the same pixels as PyAV on ordinary files and
applies rotation the same way, but it locates frames by counting packets from a keyframe, and
it is wrong or fails where that does not hold. This backend therefore opens every file with
the PyAV backend first (demuxing only, ~2% of a clip's cost) and decodes with decord only
when decord's assumptions hold:
  * the container is MP4/MOV or Matroska/WebM (decord lands on wrong frames in MPEG-TS and
    in AVI with B-frames);
  * there is one video stream (decord cannot choose one and mis-sizes some such files);
  * every keyframe's frame index equals its packet position: closed GOPs, timestamps,
    nothing discarded (open-GOP H.264/HEVC gives decord wrong frames in multi-frame batches);
  * decord opens the file (it cannot without a duration) and counts the same frames.
Otherwise, and when `get_batch` raises (e.g. a damaged file), the PyAV backend decodes: same
frame semantics and pixels, so both backends give the same answer. Each hand-over is logged
at INFO with its reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from videogn.data.pyav_backend import PyAVReader
from videogn.data.video_reader import (
    BackendNotInstalledError,
    VideoInfo,
    gather_frames,
    validate_frame_indices,
)

logger = logging.getLogger(__name__)

# Containers in which decord's timestamp seeking lands on the right frames.
_DECORD_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
# decord 0.6 has wheels for x86-64 Linux and Windows (and Intel macOS up to Python 3.8) only.
DECORD_INSTALL_HINT = (
    "decord is not installed (it ships wheels for x86-64 Linux/Windows only); "
    "pip install decord, or use the pyav backend (data.backend=pyav)"
)


def import_decord():
    """The decord module, or BackendNotInstalledError with an install hint."""
    try:
        import decord
    except ImportError as err:
        raise BackendNotInstalledError(DECORD_INSTALL_HINT) from err
    return decord


def _why_not_decord(reader: PyAVReader) -> str | None:
    """Reason decord would be wrong on this file, or None when it is safe."""
    if reader.container_format not in _DECORD_FORMATS:
        return f"decord seeks inaccurately in {reader.container_format!r} containers"
    if reader.num_video_streams > 1:
        return f"{reader.num_video_streams} video streams"
    if not reader.keyframes_at_packet_positions:
        return "open GOPs or unusable timestamps: decord would count frames wrongly"
    return None


class DecordReader:
    """An opened video decoded with decord; see the module docstring for the fallbacks."""

    backend = "decord"

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        decord = import_decord()  # a missing library is a setup error, never a bad video
        self.path = os.fspath(path)
        self._pyav = PyAVReader(self.path, threads=threads)  # raises VideoDecodeError
        self._use_decord = False
        self.num_frames, self.fps = self._pyav.num_frames, self._pyav.fps
        reason = _why_not_decord(self._pyav)
        if reason is None:
            try:
                self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=threads)
                if len(self._vr) != self.num_frames:
                    reason = f"decord counts {len(self._vr)} frames, PyAV {self.num_frames}"
            except Exception as err:  # decord raises DECORDError/RuntimeError with C++ traces
                reason = f"decord cannot open it ({_first_line(err)})"
        if reason is None:
            self._use_decord = True
        else:
            self._use_pyav(reason)

    @classmethod
    def check_installed(cls) -> None:
        import_decord()

    @property
    def uses_pyav(self) -> bool:
        """True when this file is decoded by the PyAV backend instead of decord."""
        return not self._use_decord

    def _use_pyav(self, reason: str) -> None:
        logger.info("%s: decoding with PyAV instead of decord: %s", self.path, reason)
        self._use_decord = False
        self._vr = None

    def decode(self, frame_indices) -> np.ndarray:
        """Decode frames (any order, repeats allowed) as uint8 RGB [T, H, W, 3]."""
        if not self._use_decord:
            return self._pyav.decode(frame_indices)
        indices = validate_frame_indices(frame_indices, self.num_frames, self.path)
        wanted = np.unique(indices)
        try:
            batch = self._vr.get_batch(wanted.tolist())
            frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        except Exception as err:
            self._use_pyav(f"decord failed to decode ({_first_line(err)})")
            return self._pyav.decode(indices)
        return gather_frames(frames, wanted, indices)

    def info(self) -> VideoInfo:
        """Describe the video (metadata read by PyAV, which both backends share)."""
        return dataclasses.replace(self._pyav.info(), backend=self.backend)

    def close(self) -> None:
        self._pyav.close()
        self._vr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_line(err: Exception) -> str:
    """decord errors carry multi-line C++ traces; the first informative line is enough."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Check failed" in line or "ERROR" in line or "Error" in line:
            return line[-200:]
    return (lines[0] if lines else type(err).__name__)[-200:]
