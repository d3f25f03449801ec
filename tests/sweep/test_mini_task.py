"""The mini Table 8 task: real H.264 files with lists, flashes that tint the whole frame in the
order the label says, a cache that is reused, and parameter errors that name the parameter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videogn.data.decoders import open_video
from videogn.sweep.mini.tint_task import MiniTaskParams, ensure_mini_task, render_video

SMALL = dict(
    num_classes=4,
    train_videos_per_class=2,
    val_videos_per_class=1,
    frames_per_video=16,
    frame_size=32,
    event_gap=6,
    event_length=2,
)


def test_lists_match_the_files_and_a_second_call_reuses_them(tmp_path):
    task = ensure_mini_task(tmp_path, **SMALL)
    train = [line.split() for line in task.train_list.read_text().splitlines()]
    val = [line.split() for line in task.val_list.read_text().splitlines()]
    assert len(train) == 4 * 2 and len(val) == 4 * 1
    assert sorted(int(label) for _, label in train) == [0, 0, 1, 1, 2, 2, 3, 3]
    first = task.root / train[0][0]
    with open_video(first) as video:
        frames = video.decode(list(range(16)))
    assert frames.shape == (16, 32, 32, 3)
    stamp = first.stat().st_mtime_ns
    again = ensure_mini_task(tmp_path, **SMALL)
    assert again.root == task.root and first.stat().st_mtime_ns == stamp
    manifest = json.loads((task.root / "manifest.json").read_text())
    assert manifest["params"]["event_gap"] == 6 and len(manifest["files"]) == 12


@pytest.mark.parametrize("label", [0, 1])
def test_the_flash_order_follows_the_label(label):
    params = MiniTaskParams(**SMALL, distractors=0, noise_std=0.0)
    frames, events = render_video(params, label, np.random.default_rng(3))
    red_minus_blue = frames[..., 0].astype(float).mean((1, 2)) - frames[..., 2].mean((1, 2))
    first, second = events["first_event"], events["second_event"]
    assert second - first == 6
    # label 0: red then blue; label 1: blue then red (the whole frame is tinted)
    sign = 1 if label == 0 else -1
    assert sign * red_minus_blue[first] > 50 and sign * red_minus_blue[second] < -50


def test_unknown_and_invalid_parameters_are_named(tmp_path):
    with pytest.raises(TypeError, match="frame_sise"):
        ensure_mini_task(tmp_path, frame_sise=32)
    with pytest.raises(ValueError, match="frames_per_video=7"):
        ensure_mini_task(tmp_path, frames_per_video=7, event_gap=6, event_length=2)


def test_task_changes_from_the_command_line():
    from videogn.cli.sweep import _key_values

    assert _key_values(["event_gap=4", "tint=0.5"], "--task") == {"event_gap": 4, "tint": 0.5}
    with pytest.raises(SystemExit, match="--task expects KEY=VALUE"):
        _key_values(["event_gap"], "--task")
