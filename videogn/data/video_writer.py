"""Write uint8 RGB frames as a real video file with PyAV (H.264 when the wheel has an encoder)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

logger = logging.getLogger(__name__)

# Preference order. PyAV wheels ship libx264 ("h264" is an alias of it there); some builds
# have only libopenh264. MPEG-4 part 2 is the last resort: every FFmpeg build has it.
H264_ENCODERS = ("libx264", "h264", "libopenh264")
FALLBACK_ENCODER = "mpeg4"


def available_encoder(name: str) -> bool:
    """True when this FFmpeg build can encode with `name`."""
    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError
        return False
    return True


def pick_video_encoder() -> str:
    """First available H.264 encoder, else MPEG-4 part 2 (with a warning)."""
    for name in H264_ENCODERS:
        if available_encoder(name):
            return name
    logger.warning("no H.264 encoder in this PyAV build; writing MPEG-4 part 2 instead")
    return FALLBACK_ENCODER


def _encoder_options(codec: str, quality: int) -> dict[str, str]:
    if codec in ("libx264", "h264"):
        # threads=1 and mbtree=0 keep the bitstream identical from run to run. The x264 in
        # PyAV 18's wheel reads uninitialized memory in its macroblock tree (the same frames
        # encoded twice in one process came out different for 1 in 16 videos of 64x64 and 6 in
        # 16 of 32x32; with glibc's MALLOC_PERTURB_ set, or with mbtree=0, never).
        return {
            "crf": str(quality),
            "preset": "veryfast",
            "threads": "1",
            "x264-params": "mbtree=0",
        }
    if codec == "libopenh264":
        return {"allow_skip_frames": "0"}
    return {}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25,
    *,
    codec: str | None = None,
    gop: int = 16,
    b_frames: int = 2,
    quality: int = 18,
    rotation: int | None = None,
) -> str:
    """Encode uint8 RGB frames [H, W, 3] (even H and W) to `path`; returns the encoder used.

    Args:
        gop: keyframe interval in frames.
        b_frames: maximum consecutive B-frames (0 for none).
        quality: CRF for libx264 (lower is better); ignored by other encoders.
        rotation: display rotation in degrees written as container metadata (pixels unchanged).
    """
    codec = codec or pick_video_encoder()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), "w") as container:
        stream = None
        for frame_rgb in frames:
            frame_rgb = np.ascontiguousarray(frame_rgb, dtype=np.uint8)
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = frame_rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.gop_size = gop
                stream.codec_context.max_b_frames = b_frames
                stream.options = _encoder_options(codec, quality)
                if codec not in ("libx264", "h264"):
                    stream.codec_context.bit_rate = 8 * frame_rgb.size * int(fps) // 10
                if rotation:
                    stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frames given for {path}")
        for packet in stream.encode():
            container.mux(packet)
    return codec
