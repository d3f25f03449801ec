"""Clip-length sweep: one decode per video for all settings, and the same scores as the
engine's own multi-view test run separately for each setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videogn.data.dataset import VideoTestDataset
from videogn.data.decoders import open_video
from videogn.data.demo import ensure_demo_dataset
from videogn.data.lists import read_video_list
from videogn.data.samplers import TestClipSampler
from videogn.data.transforms import TestTransform
from videogn.engine.evaluate import evaluate_shard
from videogn.models.factory import create_model
from videogn.sweep.clip_length import clip_length_sweep, parse_clip, plan_views, sweep_markdown

CLIPS = [(8, 3), (8, 2), (16, 1), (32, 1)]  # 32x1 needs 32 frames: the videos have 24
NUM_CLIPS = [1, 3, 5]
SAMPLERS = {(c, k): TestClipSampler(*c, num_clips=k) for c in CLIPS for k in NUM_CLIPS}


class CountingOpener:
    """Opens videos with the real decoder and counts the decode calls per path."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __call__(self, path, backend="pyav", threads=1):
        video = open_video(path, backend=backend, threads=threads)
        real_decode = video.decode

        def decode(indices):
            self.calls[path] = self.calls.get(path, 0) + 1
            return real_decode(indices)

        video.decode = decode
        return video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    params = dict(num_classes=4, train_videos_per_class=1, val_videos_per_class=2,
                  frames_per_video=24, frame_size=32, event_gap=8, event_length=2)  # fmt: skip
    demo = ensure_demo_dataset(tmp_path_factory.mktemp("demo"), **params)
    records = read_video_list(demo.val_list, root=demo.root)
    torch.manual_seed(0)
    model = create_model("i3d_r50", norm="gn", norm_kwargs={"num_groups": 4}, base_width=8,
                         stage_depths=(1, 1, 1, 1), num_classes=4, dropout=0.0).eval()  # fmt: skip
    transform = TestTransform(short_side=24, crop_size=24, num_crops=1)
    return records, model, transform


def test_each_video_is_decoded_once_for_the_whole_sweep(setup):
    records, model, transform = setup
    opener = CountingOpener()
    results, failures = clip_length_sweep(
        model, records, samplers=SAMPLERS, transform=transform,
        device=torch.device("cpu"), open_video_fn=opener, progress=False,
    )  # fmt: skip
    assert failures == []
    assert opener.calls == {r.path: 1 for r in records}
    assert results[((32, 1), 1)].summary() == {"videos_evaluated": 0, "videos_too_short": 8}
    for k in NUM_CLIPS:
        summary = results[((8, 2), k)].summary()
        assert summary["videos_evaluated"] == 8 and 0 <= summary["video_top1"] <= 100


@pytest.mark.parametrize(("clip", "k"), [((8, 2), 3), ((16, 1), 5)])
def test_scores_equal_the_engine_test_at_that_setting(setup, clip, k):
    records, model, transform = setup
    results, _ = clip_length_sweep(
        model, records, samplers=SAMPLERS, transform=transform,
        device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    dataset = VideoTestDataset(records, sampler=TestClipSampler(*clip, num_clips=k),
                               transform=transform)  # fmt: skip
    engine = evaluate_shard(model, dataset, list(range(len(records))),
                            device=torch.device("cpu"), num_workers=0)  # fmt: skip
    swept = np.stack(results[(clip, k)].scores)
    np.testing.assert_allclose(swept, np.stack([r.scores for r in engine]), atol=1e-5)
    assert results[(clip, k)].view_hits == sum(r.view_top1_hits for r in engine)


def test_full_frame_sweep_on_non_square_videos_equals_the_engine_test(setup, tmp_path):
    """test.num_crops=full in the sweep: each view is the whole frame (4:3 and 16:9 here),
    and the scores are the engine's own full-frame test at that setting."""
    from videogn.data.lists import VideoRecord
    from videogn.data.video_writer import write_video

    _, model, _ = setup
    rng = np.random.default_rng(1)
    records = []
    for i, (height, width) in enumerate([(48, 64), (36, 64)]):
        write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, (24, height, width, 3), np.uint8))
        records.append(VideoRecord(str(tmp_path / f"v{i}.mp4"), i))
    full = TestTransform(short_side=24, num_crops="full")
    results, failures = clip_length_sweep(
        model, records, samplers=SAMPLERS, transform=full,
        device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    assert failures == []
    for clip, k in [((8, 2), 3), ((16, 1), 1)]:
        dataset = VideoTestDataset(records, sampler=SAMPLERS[(clip, k)], transform=full)
        engine = evaluate_shard(model, dataset, [0, 1], device=torch.device("cpu"), num_workers=0)
        assert [r.view_size for r in engine] == ["24x32", "24x42"]  # whole frames
        swept = np.stack(results[(clip, k)].scores)
        np.testing.assert_allclose(swept, np.stack([r.scores for r in engine]), atol=1e-5)


def test_windows_longer_than_the_video_are_left_out():
    samplers = {(c, k): TestClipSampler(*c, num_clips=k)
                for c in [(8, 2), (16, 2), (24, 1), (25, 1)] for k in [1, 10]}  # fmt: skip
    plan = plan_views(24, 25.0, samplers)
    assert set(plan) == {((8, 2), 1), ((8, 2), 10), ((24, 1), 1), ((24, 1), 10)}
    assert len(plan[((8, 2), 10)]) == 10


def test_markdown_marks_the_training_clip_and_unevaluated_settings():
    summary = {"train_clip": "8x2", "settings": [
        {"clip": "8x2", "num_clips": 1, "video_top1": 50.0, "video_top5": 90.0,
         "videos_evaluated": 4, "videos_too_short": 0},
        {"clip": "128x1", "num_clips": 1, "videos_evaluated": 0, "videos_too_short": 4},
    ]}  # fmt: skip
    table = sweep_markdown(summary)
    assert "| 8×2 (training clip) | 50.0 / 90.0 |" in table
    assert "not evaluated (4 videos too short)" in table


def test_parse_clip_rejects_nonsense():
    assert parse_clip("32x2") == (32, 2)
    with pytest.raises(ValueError, match="FRAMESxINTERVAL"):
        parse_clip("32-2")
    with pytest.raises(ValueError, match="at least 8 frames"):
        parse_clip("4x4")


def test_the_sweep_uses_the_runs_head_and_clip_positions(setup, tmp_path):
    """A run that tests with the fully_conv head and the Non-local clip positions is swept with
    both: the scores are the engine's test with that head and those positions."""
    from videogn.data.lists import VideoRecord
    from videogn.data.video_writer import write_video
    from videogn.engine.evaluate import POOLED, TestHead

    _, model, _ = setup
    rng = np.random.default_rng(2)
    records = []
    for i, (height, width) in enumerate([(48, 64), (36, 64)]):
        write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, (24, height, width, 3), np.uint8))
        records.append(VideoRecord(str(tmp_path / f"v{i}.mp4"), i))
    full = TestTransform(short_side=48, num_crops="full")  # res5 2x2 and 2x3: several windows
    head = TestHead("fully_conv", (1, 1, 1))  # trained on 8-frame 32x32 crops
    samplers = {((8, 2), 3): TestClipSampler(8, 2, num_clips=3, clip_positions="nonlocal")}
    results, _ = clip_length_sweep(
        model, records, samplers=samplers, transform=full,
        device=torch.device("cpu"), progress=False, head=head,
    )  # fmt: skip
    dataset = VideoTestDataset(records, sampler=samplers[((8, 2), 3)], transform=full)
    swept = np.stack(results[((8, 2), 3)].scores)
    for engine_head, equal in ((head, True), (POOLED, False)):
        engine = evaluate_shard(model, dataset, [0, 1], device=torch.device("cpu"),
                                num_workers=0, head=engine_head)  # fmt: skip
        assert np.allclose(swept, np.stack([r.scores for r in engine]), atol=1e-6) == equal
