"""Reference data paths for the benchmarks, written here from the anchors' documented behaviour.

* `DecodeOnly`: pure decoding of in-memory packets with a fresh decoder, no RGB conversion,
  no frame skipping: the lower bound, and (over the whole video) the issue's 99 ms anchor.
* `pyslowfast_clip`: what PySlowFast's PyAV path does per clip: open the file, seek to a
  timestamp 1024 ticks before the clip, decode to the end of the clip window, convert every
  decoded window frame to RGB, then pick the clip's frames. A stream without a duration (MKV)
  is decoded from the start to the end, every frame converted. One open per clip, also for
  the 10 clips of a test video (each is its own dataset item there).
* `mmaction2_frames`: MMAction2's decord path: read the file into memory, open a
  `decord.VideoReader` (one thread), `get_batch` with the indices as its sampler produces
  them (for a test video, the 10 clips concatenated, overlapping windows included).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import av
import numpy as np

SEEK_MARGIN = 1024  # PySlowFast seeks this many stream ticks before the clip


class DecodeOnly:
    """Decode from in-memory packets with a fresh decoder; no conversion, no skipping."""

    def __init__(self, path: str | Path):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            self.codec_name = stream.codec_context.name
            self.extradata = stream.codec_context.extradata
            self.packets = [p for p in container.demux(stream) if p.size > 0]
        order = sorted(p.pts for p in self.packets)
        self.frame_of_pts = {pts: i for i, pts in enumerate(order)}
        self.keyframes = sorted(
            (self.frame_of_pts[p.pts], i) for i, p in enumerate(self.packets) if p.is_keyframe
        )
        self.num_frames = len(self.packets)

    def __call__(self, first: int, last: int) -> int:
        """Decode every frame from the keyframe before `first` until `last` is out."""
        start = max(pos for frame, pos in self.keyframes if frame <= first)
        codec = av.CodecContext.create(self.codec_name, "r")
        codec.extradata = self.extradata
        codec.thread_count = 1
        decoded = 0
        for packet in self.packets[start:] + [None]:
            for frame in codec.decode(packet):
                decoded += 1
                if self.frame_of_pts[frame.pts] >= last:
                    return decoded
        return decoded

    def full(self) -> int:
        return self(0, self.num_frames - 1)


def pyslowfast_clip(path: str | Path, first: int, num_frames: int, interval: int) -> np.ndarray:
    """One clip the PySlowFast way (see the module docstring): uint8 [num_frames, H, W, 3]."""
    window_len = (num_frames - 1) * interval + 1
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        if stream.duration and stream.frames:
            ticks_per_frame = stream.duration / stream.frames
            start_pts = int(first * ticks_per_frame)
            end_pts = int((first + window_len - 1) * ticks_per_frame)
            container.seek(
                max(start_pts - SEEK_MARGIN, 0), any_frame=False, backward=True, stream=stream
            )
        else:  # no duration: PySlowFast decodes the whole video
            start_pts, end_pts = 0, math.inf
        window = {}
        for frame in container.decode(stream):
            if frame.pts < start_pts:
                continue
            window[frame.pts] = frame
            if frame.pts > end_pts:
                break
        frames = [window[pts].to_rgb().to_ndarray() for pts in sorted(window)]
    if math.isinf(end_pts):  # whole video decoded: the clip's frames by position
        frames = frames[first : first + window_len]
    picks = np.minimum(np.arange(num_frames) * interval, len(frames) - 1)
    return np.stack([frames[i] for i in picks])


def pyslowfast_test(path, starts, num_frames: int, interval: int) -> list[np.ndarray]:
    """The clips of a test video, one open, seek and decode each."""
    return [pyslowfast_clip(path, int(s), num_frames, interval) for s in starts]


def mmaction2_frames(path: str | Path, indices) -> np.ndarray:
    """decord get_batch on the indices as given (MMAction2's DecordInit + DecordDecode)."""
    import decord

    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    reader = decord.VideoReader(data, num_threads=1)
    return reader.get_batch([int(i) for i in indices]).asnumpy()
