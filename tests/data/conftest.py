"""Generated test videos: each frame shows its own index as a binary code, so tests can check
which frame a decoder returned, not only that two decoders agree.

`odd_videos` writes, with PyAV, one file per awkward case the decoders must survive.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videogn.data.video_writer import write_video

CODE_BITS = 8
CODE_BLOCK = 8  # pixels per bit; big blocks survive lossy compression


def numbered_frames(count: int, height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 [count, H, W, 3]: a smooth background, a moving square, and frame i's index
    written as CODE_BITS black/white blocks along the top-left edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([yy * 2 + 40, xx + 60, 200 - yy], axis=-1).clip(0, 255)
    frames = np.repeat(background[None], count, axis=0).astype(np.uint8)
    offset = int(rng.integers(0, width))
    for i in range(count):
        x = (offset + 3 * i) % (width - 12)
        frames[i, 30:42, x : x + 12] = (250, 250, 0)
        for bit in range(CODE_BITS):
            value = 255 if (i >> bit) & 1 else 0
            frames[i, 0:CODE_BLOCK, bit * CODE_BLOCK : (bit + 1) * CODE_BLOCK] = value
    return frames


def read_frame_number(frame: np.ndarray) -> int:
    """Inverse of the code written by `numbered_frames` (frame as displayed, unrotated)."""
    number = 0
    for bit in range(CODE_BITS):
        block = frame[1 : CODE_BLOCK - 1, bit * CODE_BLOCK + 1 : (bit + 1) * CODE_BLOCK - 1]
        if block.mean() > 128:
            number |= 1 << bit
    return number


def _write_custom(
    path: Path,
    frames,
    *,
    fmt=None,
    codec="libx264",
    timestamps=None,
    options=None,
    second_stream=False,
    encoder_options=None,
):
    """Write with full control over container, codec, timestamps and extra streams."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 10
        stream.codec_context.max_b_frames = 2
        if encoder_options is not None:
            stream.options = encoder_options
        elif codec == "libx264":
            stream.options = {"crf": "12", "preset": "veryfast", "threads": "1"}
        else:
            stream.codec_context.bit_rate = 2_000_000
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        extra = None
        if second_stream:
            extra = container.add_stream(codec, rate=25)
            extra.height, extra.width = frames.shape[1] // 2, frames.shape[2] // 2
            extra.pix_fmt = "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if timestamps is not None:
                frame.pts, frame.time_base = timestamps[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
            if extra is not None:
                small = np.ascontiguousarray(255 - rgb[::2, ::2])
                for packet in extra.encode(av.VideoFrame.from_ndarray(small, format="rgb24")):
                    container.mux(packet)
        for s in (stream, extra):
            if s is not None:
                for packet in s.encode():
                    container.mux(packet)


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


NUMBERED_FRAMES = 40


@pytest.fixture(scope="session")
def odd_videos(tmp_path_factory) -> dict[str, Path]:
    """name -> path of generated awkward files. Readable ones hold `numbered_frames(40)`."""
    root = tmp_path_factory.mktemp("odd_videos")
    frames = numbered_frames(NUMBERED_FRAMES)
    videos = {
        name: root / name
        for name in (
            "normal.mp4",
            "vfr.mp4",
            "no_duration.mkv",
            "raw.h264",
            "two_streams.mp4",
            "rot90.mp4",
            "rot180.mp4",
            "rot270.mp4",
            "bframes.avi",
            "open_gop.mp4",
            "hevc.mkv",
            "stream.ts",
            "short.mp4",
            "truncated.mp4",
            "truncated_moov_at_end.mp4",
            "zero_bytes.mp4",
            "text.mp4",
            "audio_only.mp4",
        )
    }
    write_video(videos["normal.mp4"], frames, gop=10, quality=12)
    steps = np.random.default_rng(1).integers(15, 90, size=NUMBERED_FRAMES)
    _write_custom(videos["vfr.mp4"], frames, timestamps=np.cumsum(steps).tolist())
    _write_custom(videos["no_duration.mkv"], frames, fmt="matroska", options={"live": "1"})
    _write_custom(videos["raw.h264"], frames, fmt="h264")
    _write_custom(videos["two_streams.mp4"], frames, second_stream=True)
    for degrees in (90, 180, 270):
        write_video(videos[f"rot{degrees}.mp4"], frames, gop=10, quality=12, rotation=degrees)
    _write_custom(videos["bframes.avi"], frames, codec="mpeg4")
    # Open GOPs: frames decoded after a keyframe but shown before it (x264 and x265).
    gop = "keyint=10:min-keyint=10:bframes=3"
    _write_custom(
        videos["open_gop.mp4"],
        frames,
        encoder_options={
            "crf": "12",
            "threads": "1",
            "x264-params": f"open-gop=1:{gop}:b-pyramid=normal",
        },
    )
    _write_custom(videos["hevc.mkv"], frames, fmt="matroska", codec="libx265", encoder_options={
        "crf": "12", "x265-params": f"{gop}:log-level=error:pools=1"})  # fmt: skip
    _write_custom(videos["stream.ts"], frames, fmt="mpegts")
    write_video(videos["short.mp4"], frames[:5], quality=12)
    _write_custom(root / "faststart.mp4", frames, options={"movflags": "faststart"})
    data = (root / "faststart.mp4").read_bytes()
    videos["truncated.mp4"].write_bytes(data[: int(len(data) * 0.6)])
    data = videos["normal.mp4"].read_bytes()
    videos["truncated_moov_at_end.mp4"].write_bytes(data[: len(data) // 2])
    videos["zero_bytes.mp4"].write_bytes(b"")
    videos["text.mp4"].write_text("this is not a video\n")
    _write_audio_only(videos["audio_only.mp4"])
    return videos


@pytest.fixture(scope="session")
def make_numbered_frames():
    """The `numbered_frames` generator (test modules cannot import conftest)."""
    return numbered_frames


@pytest.fixture(scope="session")
def frame_number():
    """The `read_frame_number` decoder of the code written by `numbered_frames`."""
    return read_frame_number
