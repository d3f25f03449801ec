"""PyAV backend: one demux pass builds a frame index, then only the needed span is decoded.

Opening a video reads every packet of the chosen stream once (demuxing is ~1% of decoding) and
keeps them in memory, so a decode call needs no seek: it feeds the decoder from the keyframe
before the first needed frame and stops once the last needed frame is out. Only kept frames are
converted to RGB, and non-reference frames that are not needed are skipped inside libavcodec
(`skip_frame`), which cannot change any other frame's pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter

from videogn.data.frame_index import FrameIndex, build_frame_index
from videogn.data.video_reader import VideoDecodeError, VideoInfo, validate_frame_indices

logger = logging.getLogger(__name__)

# Codecs whose `skip_frame=NONREF` drops exactly the frames no other frame references.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg1video", "mpeg2video"})
# A stream whose packets end this far before its declared duration is treated as truncated.
_MIN_DURATION_COVERAGE = 0.9

_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)


class _IndexMismatch(Exception):
    """Decoded timestamps disagree with the packet index: decode sequentially instead."""


def _open_container(path: str):
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        return av.open(path, metadata_errors="ignore")
    except _AV_ERRORS as err:
        raise VideoDecodeError(path, f"cannot open as a video container: {err}") from err


def frame_rotation(frame) -> int:
    """Counter-clockwise display rotation of a frame, rounded to a multiple of 90 degrees."""
    degrees = getattr(frame, "rotation", 0) or 0
    return int(round(degrees / 90.0)) % 4 * 90


class PyAVReader:
    """An opened video decoded with PyAV; see the module docstring for the strategy."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, threads: int = 1, skip_nonref: bool = True):
        self.path = os.fspath(path)
        self._container = _open_container(self.path)
        try:
            self._stream = self._select_stream()
            codec = self._stream.codec_context
            codec.thread_count = threads
            codec.thread_type = "SLICE" if threads == 1 else "AUTO"
            self._packets = self._read_packets()
            self._index = build_frame_index(self._packets, self._container.format.name)
            self._check_not_truncated()
        except BaseException:
            self.close()
            raise
        self.num_frames = self._index.num_frames
        self.fps = self._average_fps()
        self._skip_nonref = skip_nonref and codec.name in _SKIP_NONREF_CODECS
        self._frame_shape: tuple[int, int, int] | None = None
        self._rotation: int | None = None
        # One swscale context for every frame of this video (PyAV would build one per call).
        self._reformatter = VideoReformatter()
        # Work counters since opening (tests use them to prove what a clip costs).
        self.packets_sent = 0  # packets fed to the decoder, skipped ones included
        self.frames_decoded = 0  # pictures the decoder output
        self.frames_converted = 0  # pictures converted to RGB

    # -- opening -------------------------------------------------------------------------

    def _select_stream(self):
        num_video = len(self._container.streams.video)
        if num_video == 0:
            kinds = sorted({s.type for s in self._container.streams}) or ["no streams"]
            raise VideoDecodeError(self.path, f"no video stream (found: {', '.join(kinds)})")
        stream = self._container.streams.best("video")
        return stream if stream is not None else self._container.streams.video[0]

    def _read_packets(self) -> list:
        packets = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size > 0:
                    packets.append(packet)
        except _AV_ERRORS as err:
            raise VideoDecodeError(
                self.path, f"read error after {len(packets)} packets (file damaged?): {err}"
            ) from err
        if not packets:
            raise VideoDecodeError(self.path, "the video stream has no packets")
        return packets

    def _check_not_truncated(self) -> None:
        stream = self._stream
        if not stream.duration or stream.time_base is None:
            return
        timestamps = [p.pts for p in self._packets if p.pts is not None]
        if not timestamps:
            return
        start = stream.start_time or 0
        covered = max(timestamps) - start + max(self._packets[-1].duration or 0, 0)
        missing_s = float((stream.duration - covered) * stream.time_base)
        if covered < _MIN_DURATION_COVERAGE * stream.duration and missing_s > 0.5:
            declared = float(stream.duration * stream.time_base)
            raise VideoDecodeError(
                self.path,
                f"truncated: packets cover {float(covered * stream.time_base):.2f} s of the "
                f"{declared:.2f} s the header declares ({len(self._packets)} packets read)",
            )

    def _average_fps(self) -> float:
        for rate in (self._stream.average_rate, self._stream.guessed_rate):
            if rate and rate > 0:
                return float(rate)
        timestamps = sorted(p.pts for p in self._packets if p.pts is not None)
        if len(timestamps) > 1 and self._stream.time_base:
            span = (timestamps[-1] - timestamps[0]) * self._stream.time_base
            if span > 0:
                return float(Fraction(len(timestamps) - 1) / span)
        return 0.0

    # -- decoding ------------------------------------------------------------------------

    def decode(self, frame_indices) -> np.ndarray:
        """Decode frames (any order, repeats allowed) as uint8 RGB [T, H, W, 3]."""
        indices = validate_frame_indices(frame_indices, self.num_frames, self.path)
        if self._index.by_timestamp:
            out = _FrameCollector(self, indices)
            start = self._index.start_packet(out.first)
            try:
                return out.collect(self._frames_by_timestamp(start, out.positions.keys()))
            except _IndexMismatch as mismatch:
                logger.debug("%s: %s; decoding sequentially", self.path, mismatch)
                self._index = FrameIndex.sequential(self.num_frames)
        return _FrameCollector(self, indices).collect(self._frames_sequentially())

    def _frames_by_timestamp(self, start: int, wanted=None) -> Iterator[tuple[int, VideoFrame]]:
        """(frame index, frame) in presentation order, decoding from packet `start`.

        Packets of frames not in `wanted` (None: all wanted) are sent with skip_frame=NONREF.
        Raises _IndexMismatch when decoded timestamps disagree with the index.
        """
        index = self._index
        codec = self._reset_decoder()
        skip_mode = "DEFAULT"
        previous = -1
        for position in range(start, len(self._packets)):
            if self._skip_nonref and wanted is not None:
                mode = "DEFAULT" if index.packet_frame[position] in wanted else "NONREF"
                if mode != skip_mode:
                    codec.skip_frame = skip_mode = mode
            for frame in self._send(self._packets[position], position):
                number = index.pts_to_frame.get(frame.pts)
                if number is None:
                    raise _IndexMismatch(f"decoded timestamp {frame.pts} is not in the index")
                if number < 0:
                    continue
                if number <= previous:
                    raise _IndexMismatch(f"timestamps go backwards at frame {number}")
                previous = number
                yield number, frame
        for frame in self._send(None, len(self._packets)):
            number = index.pts_to_frame.get(frame.pts, -1)
            if number > previous:
                previous = number
                yield number, frame

    def _frames_sequentially(self) -> Iterator[tuple[int, VideoFrame]]:
        """(frame index, frame) counting decoder output from the first packet."""
        self._reset_decoder()
        number = 0
        for position in range(len(self._packets) + 1):
            packet = self._packets[position] if position < len(self._packets) else None
            for frame in self._send(packet, position):
                yield number, frame
                number += 1

    def iter_frames(self) -> Iterator[tuple[int, VideoFrame]]:
        """Every frame once, in order, as undecoded-to-RGB PyAV frames: (index, frame).

        One pass over the video (for re-encoding it); frame i is the same frame `decode([i])`
        returns, before RGB conversion and rotation (see `frame_rotation`). Raises
        VideoDecodeError when a frame cannot be decoded.
        """
        expected = 0
        if self._index.by_timestamp:
            try:
                for number, frame in self._frames_by_timestamp(0):
                    if number != expected:
                        break
                    yield number, frame
                    expected += 1
            except _IndexMismatch as mismatch:
                logger.debug("%s: %s; decoding sequentially", self.path, mismatch)
                self._index = FrameIndex.sequential(self.num_frames)
        if not self._index.by_timestamp:
            for number, frame in self._frames_sequentially():
                if number == expected:
                    yield number, frame
                    expected += 1
        if expected < self.num_frames:
            raise VideoDecodeError(
                self.path,
                f"frame {expected} could not be decoded (the stream has {self.num_frames} "
                "packets: the file may be damaged)",
            )

    def _reset_decoder(self):
        codec = self._stream.codec_context
        if codec.is_open:
            codec.flush_buffers()
        codec.skip_frame = "DEFAULT"
        return codec

    def _send(self, packet, position: int):
        try:
            frames = self._stream.codec_context.decode(packet)
        except _AV_ERRORS as err:
            shown = self._index.packet_frame
            where = f", frame {shown[position]}" if shown and position < len(shown) else ""
            raise VideoDecodeError(
                self.path,
                f"decoder error at packet {position} of {len(self._packets)}{where} "
                f"(file damaged?): {err}",
            ) from err
        self.packets_sent += packet is not None
        self.frames_decoded += len(frames)
        return frames

    # -- metadata ------------------------------------------------------------------------

    @classmethod
    def check_installed(cls) -> None:
        """PyAV is a hard dependency, imported with this module: nothing to check."""

    @property
    def container_format(self) -> str:
        """The demuxer's name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"."""
        return self._container.format.name

    @property
    def num_video_streams(self) -> int:
        return len(self._container.streams.video)

    @property
    def keyframes_at_packet_positions(self) -> bool:
        """True when every keyframe's frame index equals its packet position.

        That holds for closed GOPs with timestamps and no discarded packets. Open GOPs (leading
        frames decoded after their keyframe but shown before it) break it, and so does any
        decoder that finds frames by counting packets from a keyframe, as decord does.
        """
        index = self._index
        return (
            index.by_timestamp
            and index.num_frames == len(self._packets)
            and all(frame == position for frame, position in index.keyframe_starts)
        )

    def info(self) -> VideoInfo:
        """Describe the video; decodes frame 0 once to learn rotation and displayed size."""
        if self._frame_shape is None:
            self.decode([0])
        height, width, _ = self._frame_shape
        stream = self._stream
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration:
            duration = self._container.duration / 1e6
        return VideoInfo(
            path=self.path,
            num_frames=self.num_frames,
            fps=self.fps,
            width=width,
            height=height,
            rotation=self._rotation or 0,
            duration=duration,
            codec=stream.codec_context.name,
            stream_index=stream.index,
            num_video_streams=self.num_video_streams,
            keyframes=tuple(frame for frame, _ in self._index.keyframe_starts),
            backend=self.backend,
        )

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        self._packets = []
        if container is not None:
            container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _FrameCollector:
    """Converts each wanted frame to RGB once, straight into its slot(s) of the output."""

    def __init__(self, reader: PyAVReader, indices: np.ndarray):
        self.reader = reader
        self.indices = indices
        self.positions: dict[int, list[int]] = {}
        for position, number in enumerate(indices.tolist()):
            self.positions.setdefault(number, []).append(position)
        self.first = min(self.positions)
        self.frames: np.ndarray | None = None
        self.filled: set[int] = set()

    def add(self, number: int, frame) -> bool:
        """Keep `frame` if it is wanted; returns True once every wanted frame is in."""
        positions = self.positions.get(number)
        if positions is None:
            return False
        reader = self.reader
        if reader._rotation is None:
            reader._rotation = frame_rotation(frame)
        rgb = reader._reformatter.reformat(frame, format="rgb24").to_ndarray()
        reader.frames_converted += 1
        if reader._rotation:
            rgb = np.rot90(rgb, k=reader._rotation // 90)
        if self.frames is None:
            self.frames = np.empty((len(self.indices),) + rgb.shape, dtype=np.uint8)
            reader._frame_shape = rgb.shape
        elif rgb.shape != self.frames.shape[1:]:
            raise VideoDecodeError(
                reader.path,
                f"frame size changes from {self.frames.shape[1:3]} to {rgb.shape[:2]} "
                f"at frame {number}",
            )
        for position in positions:
            self.frames[position] = rgb
        self.filled.add(number)
        return len(self.filled) == len(self.positions)

    def collect(self, frames: Iterator[tuple[int, VideoFrame]]) -> np.ndarray:
        """Consume (index, frame) pairs until every wanted frame is in."""
        for number, frame in frames:
            if self.add(number, frame):
                return self.frames
        raise self.missing_error()

    def missing_error(self) -> VideoDecodeError:
        missing = sorted(set(self.positions) - self.filled)
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        return VideoDecodeError(
            self.reader.path,
            f"frames {shown} could not be decoded ({len(missing)} of {len(self.positions)} "
            f"requested; the stream has {self.reader.num_frames} packets: the file may be "
            "damaged)",
        )
