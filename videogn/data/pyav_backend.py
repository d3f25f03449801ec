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
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from videogn.data.decoders import VideoDecodeError, VideoInfo, validate_frame_indices

logger = logging.getLogger(__name__)

# Formats whose timestamps do not give presentation order (packed B-frames in AVI).
_UNRELIABLE_PTS_FORMATS = frozenset({"avi"})
# Codecs whose `skip_frame=NONREF` drops exactly the frames no other frame references.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg1video", "mpeg2video"})
# A stream whose packets end this far before its declared duration is treated as truncated.
_MIN_DURATION_COVERAGE = 0.9

_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)


class _IndexMismatch(Exception):
    """Decoded timestamps disagree with the packet index: decode sequentially instead."""


@dataclass
class _FrameIndex:
    """Map between packets (decode order) and frames (presentation order)."""

    num_frames: int
    packet_frame: list[int] | None  # frame index of each packet, -1 when it shows no frame
    pts_to_frame: dict | None  # None: timestamps unusable, count decoder output instead
    keyframe_starts: list[tuple[int, int]]  # (frame index, packet position), ascending

    @property
    def by_timestamp(self) -> bool:
        return self.pts_to_frame is not None

    def start_packet(self, first_frame: int) -> int:
        """Packet position of the last keyframe at or before `first_frame` (0 if none)."""
        start = 0
        for frame, position in self.keyframe_starts:
            if frame > first_frame:
                break
            start = position
        return start


def _build_index(packets: list, format_name: str) -> _FrameIndex:
    shown = [p for p in packets if not p.is_discard]
    pts = [p.pts for p in shown]
    usable = (
        format_name not in _UNRELIABLE_PTS_FORMATS
        and all(t is not None for t in pts)
        and len(set(pts)) == len(pts)
    )
    if not usable:
        return _FrameIndex(len(shown), None, None, [])
    frame_of_pts = {t: i for i, t in enumerate(sorted(pts))}
    # Discarded packets (outside an edit list) are decoded as references but never shown.
    pts_to_frame = {p.pts: -1 for p in packets if p.is_discard and p.pts is not None}
    pts_to_frame.update(frame_of_pts)
    packet_frame = [-1 if p.is_discard else frame_of_pts[p.pts] for p in packets]
    keyframe_starts = [
        (packet_frame[i], i)
        for i, p in enumerate(packets)
        if p.is_keyframe and packet_frame[i] >= 0
    ]
    keyframe_starts.sort()
    return _FrameIndex(len(shown), packet_frame, pts_to_frame, keyframe_starts)


def _open_container(path: str):
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        return av.open(path, metadata_errors="ignore")
    except _AV_ERRORS as err:
        raise VideoDecodeError(path, f"cannot open as a video container: {err}") from err


def _rotation_of(frame) -> int:
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
            self._index = _build_index(self._packets, self._container.format.name)
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
            try:
                return self._decode_by_timestamp(indices)
            except _IndexMismatch as mismatch:
                logger.debug("%s: %s; decoding sequentially", self.path, mismatch)
                self._index = _FrameIndex(self.num_frames, None, None, [])
        return self._decode_sequentially(indices)

    def _decode_by_timestamp(self, indices: np.ndarray) -> np.ndarray:
        index = self._index
        out = _FrameCollector(self, indices)
        wanted_set = out.positions.keys()
        codec = self._reset_decoder()
        skip_mode = "DEFAULT"
        previous = -1
        for position in range(index.start_packet(out.first), len(self._packets)):
            if self._skip_nonref:
                mode = "DEFAULT" if index.packet_frame[position] in wanted_set else "NONREF"
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
                if out.add(number, frame):
                    return out.frames
        for frame in self._send(None, len(self._packets)):
            number = index.pts_to_frame.get(frame.pts, -1)
            if number > previous and out.add(number, frame):
                return out.frames
        raise out.missing_error()

    def _decode_sequentially(self, indices: np.ndarray) -> np.ndarray:
        out = _FrameCollector(self, indices)
        self._reset_decoder()
        number = 0
        for position in range(len(self._packets) + 1):
            packet = self._packets[position] if position < len(self._packets) else None
            for frame in self._send(packet, position):
                if out.add(number, frame):
                    return out.frames
                number += 1
        raise out.missing_error()

    def _reset_decoder(self):
        codec = self._stream.codec_context
        if codec.is_open:
            codec.flush_buffers()
        codec.skip_frame = "DEFAULT"
        return codec

    def _send(self, packet, position: int):
        try:
            return self._stream.codec_context.decode(packet)
        except _AV_ERRORS as err:
            shown = self._index.packet_frame
            where = f", frame {shown[position]}" if shown and position < len(shown) else ""
            raise VideoDecodeError(
                self.path,
                f"decoder error at packet {position} of {len(self._packets)}{where} "
                f"(file damaged?): {err}",
            ) from err

    # -- metadata ------------------------------------------------------------------------

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
            num_video_streams=len(self._container.streams.video),
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
            reader._rotation = _rotation_of(frame)
        rgb = reader._reformatter.reformat(frame, format="rgb24").to_ndarray()
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

    def missing_error(self) -> VideoDecodeError:
        missing = sorted(set(self.positions) - self.filled)
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        return VideoDecodeError(
            self.reader.path,
            f"frames {shown} could not be decoded ({len(missing)} of {len(self.positions)} "
            f"requested; the stream has {self.reader.num_frames} packets: the file may be "
            "damaged)",
        )
