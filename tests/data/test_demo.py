"""The built-in demo dataset: real videos, Kinetics-style lists, temporal classes, caching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videogn.data.decoders import decode, probe
from videogn.data.demo import DemoParams, class_names, ensure_demo_dataset, render_video
from videogn.data.lists import read_classes, read_video_list
from videogn.data.video_writer import pick_video_encoder, write_video

TINY = {
    "num_classes": 4,
    "train_videos_per_class": 2,
    "val_videos_per_class": 1,
    "frames_per_video": 24,
    "frame_size": 32,
    "event_gap": 8,
}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo_cache"), **TINY)


def test_demo_writes_h264_videos_and_kinetics_style_lists(tiny_demo):
    train = read_video_list(tiny_demo.train_list, root=tiny_demo.root)
    val = read_video_list(tiny_demo.val_list, root=tiny_demo.root)
    assert len(train) == 8 and len(val) == 4
    assert sorted(r.label for r in train) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert read_classes(tiny_demo.classes_file) == class_names(4)
    info = probe(train[0].path)
    assert (info.num_frames, info.width, info.height, info.codec) == (24, 32, 32, "h264")
    assert decode(val[-1].path, [0, 23]).shape == (2, 32, 32, 3)


def test_second_call_reuses_the_cache(tiny_demo):
    first_video = sorted((tiny_demo.root / "train").rglob("*.mp4"))[0]
    mtime = first_video.stat().st_mtime_ns
    again = ensure_demo_dataset(tiny_demo.root.parent, **TINY)
    assert again.root == tiny_demo.root and first_video.stat().st_mtime_ns == mtime
    manifest = json.loads((tiny_demo.root / "manifest.json").read_text())
    assert manifest["params"]["event_gap"] == 8 and manifest["num_videos"] == 12


def test_damaged_cache_is_regenerated(tmp_path):
    demo = ensure_demo_dataset(tmp_path, **{**TINY, "train_videos_per_class": 1})
    victim = sorted((demo.root / "val").rglob("*.mp4"))[0]
    victim.unlink()
    ensure_demo_dataset(tmp_path, **{**TINY, "train_videos_per_class": 1})
    assert victim.is_file()


def test_generation_is_deterministic_and_parameters_change_the_key(tiny_demo, tmp_path):
    other = ensure_demo_dataset(tmp_path, **{**TINY, "train_videos_per_class": 1})
    assert other.root.name != tiny_demo.root.name
    rel = "train/right_red_then_blue/train_00_0000.mp4"
    assert np.array_equal(
        decode(other.root / rel, np.arange(24)), decode(tiny_demo.root / rel, np.arange(24))
    )


def disk_mask(frame: np.ndarray) -> np.ndarray:
    return (frame > 235).all(axis=-1)


@pytest.mark.parametrize("label, motion", [(0, (0, 1)), (3, (0, -1)), (4, (1, 0)), (7, (-1, 0))])
def test_class_is_motion_direction_and_event_order(label, motion):
    params = DemoParams(frame_size=64, frames_per_video=20, noise_std=0, distractors=0, speed=1.0)
    frames, events = render_video(params, label, np.random.default_rng(label))
    # The disk moves one pixel per frame in the class direction, wrapping around the edges.
    for t in range(5):
        moved = np.roll(disk_mask(frames[t]), shift=motion, axis=(0, 1))
        assert disk_mask(frames[t]).sum() > 20 and np.array_equal(moved, disk_mask(frames[t + 1]))
    first, second = events["first_event"], events["second_event"]
    assert second - first == params.event_gap
    red_first = label % 2 == 0
    reddish = (frames[..., 0] > 200) & (frames[..., 2] < 80)
    bluish = (frames[..., 2] > 200) & (frames[..., 0] < 80)
    assert reddish[first].any() == red_first and bluish[first].any() != red_first
    assert reddish[second].any() != red_first and bluish[second].any() == red_first


def test_a_long_clip_sees_both_events_more_often_with_a_large_gap():
    params = DemoParams(frames_per_video=48, event_gap=20, frame_size=32)
    rng = np.random.default_rng(0)
    firsts = [render_video(params, 0, rng)[1]["first_event"] for _ in range(20)]

    def both_seen(num_frames, interval, first):
        starts = range(0, 48 - (num_frames - 1) * interval)
        seen = [
            any(first <= s + k * interval < first + 3 for k in range(num_frames))
            and any(first + 20 <= s + k * interval < first + 23 for k in range(num_frames))
            for s in starts
        ]
        return np.mean(seen)

    short = np.mean([both_seen(8, 2, f) for f in firsts])
    long = np.mean([both_seen(16, 2, f) for f in firsts])
    assert short == 0.0 and long > 0.4  # about half of the random 16x2 clips


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        ensure_demo_dataset(tmp_path, num_classes=5)
    with pytest.raises(ValueError, match="frames_per_video"):
        ensure_demo_dataset(tmp_path, frames_per_video=10, event_gap=12)
    with pytest.raises(TypeError, match="unknown demo parameters"):
        ensure_demo_dataset(tmp_path, colour="red")


def test_encoder_choice_and_mpeg4_fallback(tmp_path, make_numbered_frames):
    assert pick_video_encoder() in ("libx264", "h264", "libopenh264", "mpeg4")
    assert write_video(tmp_path / "m.mp4", make_numbered_frames(6), codec="mpeg4") == "mpeg4"
    assert probe(tmp_path / "m.mp4").codec == "mpeg4"


def test_encoding_the_same_frames_again_gives_the_same_bytes(tmp_path):
    """Demo and mini-task files are keyed by their parameters, so a video must not depend on
    what the encoder did before it (small frames hit x264's uninitialized reads most)."""
    params = DemoParams(frame_size=32, frames_per_video=24, event_gap=8)
    videos = [render_video(params, label, np.random.default_rng(label))[0] for label in range(8)]
    digests = []
    for repeat in range(3):
        written = []
        for number, frames in enumerate(videos):
            path = tmp_path / f"{repeat}_{number}.mp4"
            write_video(path, frames, gop=12, quality=23)
            written.append(path.read_bytes())
        digests.append(written)
    assert digests[1] == digests[0] and digests[2] == digests[0]
