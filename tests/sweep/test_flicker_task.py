"""The mini Table 8 task (take 2): its two argued properties hold in the generated pixels.

A period-2 flicker is invisible to a clip that takes every other frame and visible to one
that takes every frame; a period-4 flicker is visible to both; a steady disk never changes;
backgrounds differ from video to video in mean and contrast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from videogn.data.decoders import open_video
from videogn.sweep.mini.flicker_task import (
    FlickerTaskParams,
    colour_states,
    ensure_flicker_task,
    render_video,
)

SMALL = dict(num_classes=4, train_videos_per_class=2, val_videos_per_class=1, frames_per_video=16)


@pytest.mark.parametrize("seed", range(6))
def test_period_2_flicker_is_invisible_at_stride_2_and_visible_at_stride_1(seed):
    rng = np.random.default_rng(seed)
    states, period = colour_states(1, 16, (2,), rng)
    assert period == 2
    assert len(set(states[0::2])) == 1 and len(set(states[1::2])) == 1  # 8x2: one colour
    assert (np.diff(states) != 0).all()  # 16x1: changes every frame


def test_period_4_flicker_is_visible_at_stride_2_and_steady_never_changes():
    for seed in range(6):
        states, period = colour_states(1, 16, (4,), np.random.default_rng(seed))
        assert period == 4 and (np.diff(states[seed % 2 :: 2]) != 0).all()
        steady, none = colour_states(0, 16, (2, 4), np.random.default_rng(seed))
        assert none == 0 and len(set(steady)) == 1


def test_rendered_disk_flickers_every_other_frame_at_period_2():
    params = FlickerTaskParams(**SMALL, flicker_periods=(2,))
    flicker, annotation = render_video(params, 1, np.random.default_rng(0))
    # Label 0 from the same generator state: the same background, noise, path and colours
    # (all drawn before the colour states), a steady disk.
    steady, _ = render_video(params, 0, np.random.default_rng(0))
    assert annotation["flicker_period"] == 2 and flicker.shape == (16, 48, 48, 3)
    differs = (np.abs(flicker.astype(int) - steady.astype(int)).max(-1) > 40).any((1, 2))
    assert (differs[0::2] != differs[1::2]).all()  # one colour on even frames, the other on odd


def test_backgrounds_vary_in_brightness_and_contrast():
    params = FlickerTaskParams(**SMALL)
    videos = [render_video(params, 0, np.random.default_rng(i))[0] for i in range(12)]
    means = [v.mean() for v in videos]
    stds = [v[0].std() for v in videos]
    assert max(means) - min(means) > 40 and max(stds) > 2 * min(stds)


def test_lists_files_and_cache(tmp_path):
    task = ensure_flicker_task(tmp_path, **SMALL)
    train = [line.split() for line in task.train_list.read_text().splitlines()]
    assert len(train) == 8 and sorted(int(label) for _, label in train) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (task.root / "classes.txt").read_text().split() == [
        "right_steady", "right_flicker", "left_steady", "left_flicker",
    ]  # fmt: skip
    with open_video(task.root / train[0][0]) as video:
        assert video.decode(list(range(16))).shape == (16, 48, 48, 3)
    annotations = json.loads((task.root / "annotations.json").read_text())
    assert {a["flicker_period"] for a in annotations.values()} <= {0, 2, 4}
    stamp = (task.root / train[0][0]).stat().st_mtime_ns
    assert ensure_flicker_task(tmp_path, **SMALL).root == task.root
    assert (task.root / train[0][0]).stat().st_mtime_ns == stamp


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="flicker_periods"):
        ensure_flicker_task(tmp_path, flicker_periods=(3,))
    with pytest.raises(TypeError, match="flicker_period_s"):
        ensure_flicker_task(tmp_path, flicker_period_s=2)
