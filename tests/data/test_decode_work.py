"""What a decode costs: packets fed to the decoder and frames converted, counted by the reader.

A clip must never cost a whole-video decode: it decodes from the keyframe before its first
frame to its last frame (plus the decoder's reorder delay), and converts only its frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from videogn.data.pyav_backend import PyAVReader, frame_rotation
from videogn.data.samplers import TestClipSampler, TrainClipSampler

REORDER_DELAY = 4  # frames an H.264 decoder may hold back (B-frames); bounds the overshoot


def clip_cost(reader: PyAVReader, indices: np.ndarray) -> tuple[int, int, int]:
    """(packets sent, frames decoded, frames converted) by one decode call."""
    before = reader.packets_sent, reader.frames_decoded, reader.frames_converted
    reader.decode(indices)
    after = reader.packets_sent, reader.frames_decoded, reader.frames_converted
    return tuple(a - b for a, b in zip(after, before, strict=True))


def needed_span(reader: PyAVReader, indices: np.ndarray) -> int:
    """Packets from the keyframe at or before the first index to the last index."""
    keyframe = max(f for f, _ in reader._index.keyframe_starts if f <= indices.min())
    return int(indices.max()) + 1 - keyframe


def train_clips_everywhere(num_frames: int, shapes=((32, 2), (64, 1)), step: int = 19):
    """Clips at starts spread over the video, the first and last possible start included."""
    for f, i in shapes:
        last_start = num_frames - ((f - 1) * i + 1)
        for start in [*range(0, last_start, step), last_start]:
            yield start + i * np.arange(f)


def test_mkv_train_clips_never_decode_the_whole_video(shared_videos):
    """The Kinetics MKV has no duration or frame count; PySlowFast decodes it whole per clip."""
    with PyAVReader(shared_videos / "decord_flipping_a_pancake.mkv") as reader:
        assert reader.num_frames == 310
        for indices in train_clips_everywhere(reader.num_frames):
            sent, decoded, converted = clip_cost(reader, indices)
            assert sent <= needed_span(reader, indices) + REORDER_DELAY
            assert sent < reader.num_frames
            assert decoded <= sent
            assert converted == len(np.unique(indices))


def test_mkv_test_video_is_one_pass(shared_videos):
    with PyAVReader(shared_videos / "decord_flipping_a_pancake.mkv") as reader:
        clips = TestClipSampler(32, 2, num_clips=10)(reader.num_frames)
        sent, _, converted = clip_cost(reader, np.concatenate(clips))
        assert sent <= reader.num_frames  # every packet at most once
        assert converted == len(np.unique(np.concatenate(clips)))


def test_clip_cost_is_bounded_on_a_file_without_duration(odd_videos):
    """Generated MKV without duration (keyframe every 10 frames), no shared videos needed."""
    with PyAVReader(odd_videos["no_duration.mkv"]) as reader:
        sampler = TrainClipSampler(4, 2)
        rng = np.random.default_rng(0)
        for _ in range(10):
            indices = sampler(reader.num_frames, rng)
            sent, _, converted = clip_cost(reader, indices)
            assert sent <= needed_span(reader, indices) + REORDER_DELAY
            assert converted == len(indices)
        sent, _, _ = clip_cost(reader, np.array([reader.num_frames - 1]))
        assert sent <= 10 + REORDER_DELAY  # the last GOP only


def test_frames_before_the_window_that_nothing_references_are_skipped(shared_videos):
    """The demo clip has its first keyframes 187 frames apart: skip_frame=NONREF pays off."""
    with PyAVReader(shared_videos / "mmaction2_demo.mp4") as reader:
        indices = 120 + 2 * np.arange(32)
        sent, decoded, _ = clip_cost(reader, indices)
        assert sent <= needed_span(reader, indices) + REORDER_DELAY
        assert decoded < 0.8 * sent


@pytest.mark.parametrize(
    "name", ["normal.mp4", "vfr.mp4", "bframes.avi", "open_gop.mp4", "rot90.mp4", "raw.h264"]
)
def test_iter_frames_yields_every_frame_as_decode_does(odd_videos, name):
    with PyAVReader(odd_videos[name]) as reader:
        expected = reader.decode(np.arange(reader.num_frames))
        numbers, frames = [], []
        for number, frame in reader.iter_frames():
            rgb = frame.to_ndarray(format="rgb24")
            numbers.append(number)
            frames.append(np.rot90(rgb, k=frame_rotation(frame) // 90))
    assert numbers == list(range(len(expected)))
    np.testing.assert_array_equal(np.stack(frames), expected)
