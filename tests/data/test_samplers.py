"""Samplers: pure index logic, checked exhaustively over clip shapes and video lengths."""

from __future__ import annotations

import numpy as np
import pytest

from videogn.data.samplers import TestClipSampler, TrainClipSampler

CLIP_SHAPES = [(32, 2), (64, 1), (8, 8), (1, 1), (4, 3), (16, 4)]
VIDEO_LENGTHS = range(1, 160)


def window(num_frames: int, interval: int) -> int:
    return (num_frames - 1) * interval + 1


@pytest.mark.parametrize("shape", CLIP_SHAPES)
def test_train_clips_are_strided_in_range_and_every_start_occurs(shape):
    num_frames, interval = shape
    sampler = TrainClipSampler(num_frames, interval)
    rng = np.random.default_rng(0)
    for n in VIDEO_LENGTHS:
        slack = n - window(num_frames, interval)
        if slack < 0:
            continue
        draws = 12 * (slack + 1) if slack < 40 else 100
        starts = set()
        for _ in range(draws):
            clip = sampler(n, rng)
            assert clip.shape == (num_frames,) and clip.dtype.kind == "i"
            assert np.all(np.diff(clip) == interval)
            assert clip[0] >= 0 and clip[-1] < n
            starts.add(int(clip[0]))
        assert min(starts) >= 0 and max(starts) <= slack
        if slack < 40:  # every valid start is reachable
            assert starts == set(range(slack + 1)), n


def test_train_start_is_uniform():
    sampler = TrainClipSampler(32, 2)
    rng = np.random.default_rng(1)
    starts = np.array([sampler(72, rng)[0] for _ in range(20_000)])  # starts 0..9
    counts = np.bincount(starts, minlength=10)
    assert len(counts) == 10
    assert counts.min() > 0.9 * 2000 and counts.max() < 1.1 * 2000


@pytest.mark.parametrize("shape", CLIP_SHAPES)
def test_short_video_policies(shape):
    num_frames, interval = shape
    loop = TrainClipSampler(num_frames, interval, short_video="loop")
    repeat = TrainClipSampler(num_frames, interval, short_video="repeat_last")
    rng = np.random.default_rng(0)
    offsets = np.arange(num_frames) * interval
    for n in VIDEO_LENGTHS:
        if n >= window(num_frames, interval):
            continue
        assert np.array_equal(loop(n, rng), offsets % n)
        assert np.array_equal(repeat(n, rng), np.minimum(offsets, n - 1))
        test_loop = TestClipSampler(num_frames, interval, num_clips=3, short_video="loop")
        assert all(np.array_equal(c, offsets % n) for c in test_loop(n))


def test_one_frame_video_gives_a_clip_of_that_frame():
    for policy in ("loop", "repeat_last"):
        clip = TrainClipSampler(32, 2, short_video=policy)(1, np.random.default_rng(0))
        assert np.array_equal(clip, np.zeros(32, dtype=int))


def expected_test_starts(n: int, num_frames: int, interval: int, num_clips: int) -> list[int]:
    """The documented formula, computed independently with Python integers."""
    slack = max(n - window(num_frames, interval), 0)
    return [((2 * k + 1) * (slack + 1)) // (2 * num_clips) for k in range(num_clips)]


@pytest.mark.parametrize("shape", CLIP_SHAPES)
@pytest.mark.parametrize("num_clips", [1, 2, 3, 10])
def test_test_clips_follow_the_start_formula(shape, num_clips):
    num_frames, interval = shape
    sampler = TestClipSampler(num_frames, interval, num_clips=num_clips)
    for n in VIDEO_LENGTHS:
        clips = sampler(n)
        assert len(clips) == num_clips
        starts = [int(c[0]) for c in clips]
        assert starts == expected_test_starts(n, num_frames, interval, num_clips)
        slack = n - window(num_frames, interval)
        for clip in clips:
            assert clip.shape == (num_frames,) and clip.min() >= 0 and clip.max() < n
            if slack >= 0:
                assert np.all(np.diff(clip) == interval)
        if slack >= 0:
            # Ordered, symmetric about the middle of the video, spacing even to one frame.
            assert starts == sorted(starts)
            for k in range(num_clips):
                assert abs(starts[k] + starts[num_clips - 1 - k] - slack) <= 1
            gaps = np.diff(starts)
            if len(gaps):
                assert gaps.max() - gaps.min() <= 1


def test_test_clip_edge_cases():
    # A video exactly one window long: every clip is the whole video.
    clips = TestClipSampler(32, 2, num_clips=10)(63)
    assert all(np.array_equal(c, np.arange(0, 64, 2)) for c in clips)
    # One clip is the centre clip.
    (centre,) = TestClipSampler(8, 1, num_clips=1)(108)
    assert centre[0] == 50 and centre[-1] == 57
    # The demo clip: 280 frames, 32x2 (window 63, slack 217): 10 clips from 10 to 207.
    starts = TestClipSampler(32, 2).starts(280)
    assert starts.tolist() == [10, 32, 54, 76, 98, 119, 141, 163, 185, 207]


def test_target_fps_resamples_by_time():
    rng = np.random.default_rng(0)
    sampler = TrainClipSampler(4, 2, target_fps=30)
    for fps, step in ((60, 4), (30, 2), (15, 1)):
        clip = sampler(1000, rng, video_fps=fps)
        assert np.all(np.diff(clip) == step), fps
    clip = TrainClipSampler(6, 1, target_fps=30)(1000, rng, video_fps=24)
    assert np.array_equal(clip - clip[0], [0, 0, 1, 2, 3, 4])  # floor(k * 0.8)
    test_clips = TestClipSampler(4, 2, num_clips=2, target_fps=30)(100, video_fps=60)
    assert all(np.all(np.diff(c) == 4) for c in test_clips)
    with pytest.raises(ValueError, match="fps"):
        sampler(100, rng)


def test_without_target_fps_the_video_fps_is_ignored():
    sampler = TrainClipSampler(4, 2)
    assert np.all(np.diff(sampler(100, np.random.default_rng(0), video_fps=60)) == 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 0, "frame_interval": 1}, "num_frames"),
        ({"num_frames": 4, "frame_interval": 0}, "frame_interval"),
        ({"num_frames": 4, "frame_interval": 1, "short_video": "pad"}, "short_video"),
        ({"num_frames": 4, "frame_interval": 1, "target_fps": 0}, "target_fps"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainClipSampler(**kwargs)


def test_bad_video_length_and_num_clips_are_rejected():
    with pytest.raises(ValueError, match="at least one frame"):
        TrainClipSampler(4, 1)(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_clips"):
        TestClipSampler(4, 1, num_clips=0)


def test_both_test_clip_positions_on_a_300_frame_video():
    """K=10 clips of 32x2 (a 63-frame window) on 300 frames. centered: the centres of 10 equal
    parts of the 238 valid starts, no wrap; nonlocal: int(300 k / 10), the clips starting at
    240 and 270 wrapping past the end to frame 0 as the Non-local reader's index mod N."""
    centered = TestClipSampler(32, 2, num_clips=10)
    nonlocal_ = TestClipSampler(32, 2, num_clips=10, clip_positions="nonlocal")
    assert centered.starts(300).tolist() == [11, 35, 59, 83, 107, 130, 154, 178, 202, 226]
    assert nonlocal_.starts(300).tolist() == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]
    clips = nonlocal_(300)
    assert clips[7].tolist() == list(range(210, 273, 2))
    assert clips[9].tolist() == [(270 + 2 * i) % 300 for i in range(32)]
    assert clips[9][:15].tolist() == list(range(270, 300, 2)) and clips[9][15] == 0
    assert all((np.diff(c) == 2).all() for c in centered(300)) and centered(300)[9][-1] == 288


def test_nonlocal_starts_follow_the_readers_float32_arithmetic():
    """The C++ reader computes float(N) / float(K) * k in float32: for N=70, K=30, clip 27
    starts at 62 where exact arithmetic gives 63. The reader's value is kept."""
    starts = TestClipSampler(1, 1, num_clips=30, clip_positions="nonlocal").starts(70)
    assert starts[27] == 62 and 70 * 27 // 30 == 63
    assert starts[15] == 35  # exact where float32 is
    with pytest.raises(ValueError, match="test.clip_positions"):
        TestClipSampler(8, 1, clip_positions="uniform")
