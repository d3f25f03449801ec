"""Multi-view testing: aggregation of view scores, accuracies, failures, output files."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from videogn.engine.distributed import shard_indices
from videogn.engine.evaluate import evaluate_shard, summarize, write_results


class ViewLogits(nn.Module):
    """Logits read from the first 3 voxels of each view, so tests choose them exactly."""

    def forward(self, x):
        return x.flatten(1)[:, :3]


class ViewsDataset(Dataset):
    """Videos of 2 views with chosen logits; video 2 fails to decode."""

    def __init__(self):
        self.logits = {
            0: [[5.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # views disagree; class 0 wins on mean
            1: [[0.0, 0.0, 4.0], [0.0, 0.0, 4.0]],
            3: [[0.0, 3.0, 0.0], [0.0, 0.0, 2.9]],
        }
        self.labels = [0, 2, 1, 2]

    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            return {"views": torch.empty(0), "label": 1, "index": i, "error": "moov atom not found"}
        views = torch.zeros(2, 3, 1, 1, 3)
        views.view(2, -1)[:, :3] = torch.tensor(self.logits[i])
        return {"views": views, "label": self.labels[i], "index": i, "error": None}


def run(indices, aggregate="mean"):
    return evaluate_shard(
        ViewLogits(),
        ViewsDataset(),
        indices,
        device=torch.device("cpu"),
        aggregate=aggregate,
        views_per_batch=1,
        num_workers=0,
    )


def test_failures_are_reported_not_dropped():
    results = run([0, 1, 2, 3])
    paths = [f"v{i}.mp4" for i in range(4)]
    summary = summarize(results, num_listed=4, num_classes=3, paths=paths)
    assert (summary["videos_listed"], summary["videos_evaluated"], summary["videos_failed"]) == (
        4,
        3,
        1,
    )
    assert summary["failures"] == [{"path": "v2.mp4", "label": 1, "reason": "moov atom not found"}]


def test_video_and_clip_accuracy_and_per_class():
    summary = summarize(
        run([0, 1, 2, 3]), num_listed=4, num_classes=3, paths=[str(i) for i in range(4)]
    )
    # video 0 -> 0 (right), video 1 -> 2 (right), video 3 -> 1 (wrong: label 2)
    assert summary["video_top1"] == pytest.approx(200 / 3)
    # views: v0 (0 ok, 1 wrong), v1 (ok, ok), v3 (1 wrong, 2 ok)
    assert summary["clip_top1"] == pytest.approx(100 * 4 / 6)
    assert summary["per_class_accuracy"] == [100.0, None, 50.0]
    assert summary["mean_class_accuracy"] == pytest.approx(75.0)
    assert summary["video_top5"] == 100.0
    # Over the 4 listed videos, the failed one (video 2) counted wrong: 2 and 3 hits of 4.
    assert (summary["video_top1_listed"], summary["video_top5_listed"]) == (50.0, 75.0)


def view_softmax(video: int) -> np.ndarray:
    """The softmax of each view's chosen logits, computed apart from the code under test."""
    logits = np.array(ViewsDataset().logits[video], dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("aggregate", "combine"),
    [("mean", lambda p: p.mean(0)), ("sum", lambda p: p.sum(0)), ("max", lambda p: p.max(0))],
)
def test_aggregations_combine_the_view_scores_as_named(aggregate, combine):
    # Video 0's two views disagree (class 0 at 5, class 1 at 1), so mean, sum and max all differ.
    probs = view_softmax(0)
    expected = combine(probs)
    others = {"mean": probs.mean(0), "sum": probs.sum(0), "max": probs.max(0)}
    assert all(not np.allclose(expected, v) for k, v in others.items() if k != aggregate)
    scores = run([0], aggregate)[0].scores
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_max_differs_from_mean_when_one_view_is_confident():
    mean = run([3], "mean")[0].scores
    peak = run([3], "max")[0].scores
    assert np.argmax(mean) == 1 and peak.max() == pytest.approx(
        torch.tensor([0.0, 3.0, 0.0]).softmax(0).max().item()
    )


def test_shards_merge_to_the_single_process_result():
    single = summarize(run([0, 1, 2, 3]), num_listed=4, num_classes=3, paths=list("abcd"))
    shards = [r for rank in range(3) for r in run(shard_indices(4, rank, 3))]
    merged = summarize(
        sorted(shards, key=lambda r: r.index), num_listed=4, num_classes=3, paths=list("abcd")
    )
    assert merged == single


def test_unknown_aggregation_lists_choices():
    with pytest.raises(ValueError, match="mean, sum, max"):
        run([0], "median")


def test_results_files(tmp_path):
    results = run([0, 1, 2, 3])
    paths = [f"v{i}.mp4" for i in range(4)]
    summary = summarize(results, num_listed=4, num_classes=3, paths=paths)
    results_path, scores_path = write_results(tmp_path, summary, results, paths)
    assert json.loads(results_path.read_text())["videos_evaluated"] == 3
    scores = np.load(scores_path)
    assert list(scores["paths"]) == ["v0.mp4", "v1.mp4", "v3.mp4"]
    assert scores["scores"].shape == (3, 3) and list(scores["labels"]) == [0, 2, 2]


def test_full_frame_views_of_other_sizes_are_scored_apart_never_padded(tmp_path):
    """test.num_crops=full on real videos of three aspect ratios: every video is one loader
    item (its views share a size), so each score is the model's on that video alone. Padding
    a smaller frame to batch it with a larger one would change its score (the global average
    pool would average the padding in), which is why videos are never batched together."""
    from videogn.data.dataset import VideoTestDataset
    from videogn.data.lists import VideoRecord
    from videogn.data.samplers import TestClipSampler
    from videogn.data.transforms import TestTransform
    from videogn.data.video_writer import write_video
    from videogn.models.factory import create_model

    rng = np.random.default_rng(0)
    records = []
    for i, (height, width) in enumerate([(48, 64), (36, 64), (64, 48)]):  # 4:3, 16:9, portrait
        path = tmp_path / f"v{i}.mp4"
        write_video(path, rng.integers(0, 256, (12, height, width, 3), dtype=np.uint8))
        records.append(VideoRecord(str(path), i % 3))
    dataset = VideoTestDataset(
        records,
        sampler=TestClipSampler(8, 1, num_clips=2),
        transform=TestTransform(short_side=32, num_crops="full"),
    )
    torch.manual_seed(0)
    model = create_model(
        "i3d_r50", norm="gn", norm_kwargs={"num_groups": 4}, num_classes=3, base_width=8,
        stage_depths=(1, 1, 1, 1),
    ).eval()  # fmt: skip
    results = evaluate_shard(
        model, dataset, [0, 1, 2], device=torch.device("cpu"), views_per_batch=2, num_workers=0
    )
    sizes = [tuple(dataset[i]["views"].shape[-2:]) for i in range(3)]
    assert sizes == [(32, 42), (32, 56), (42, 32)]
    with torch.no_grad():
        for result, index in zip(results, range(3), strict=True):
            alone = model(dataset[index]["views"]).softmax(dim=1).mean(dim=0)
            torch.testing.assert_close(torch.from_numpy(result.scores), alone)
        views = dataset[0]["views"]  # 32x42, padded to the 16:9 video's 32x56
        padded = F.pad(views, (0, 56 - 42))
        assert not torch.allclose(model(padded).softmax(1).mean(0), model(views).softmax(1).mean(0))


def toy_i3d(seed: int = 0) -> nn.Module:
    from videogn.models.factory import create_model

    torch.manual_seed(seed)
    model = create_model("i3d_r50", norm="gn", norm_kwargs={"num_groups": 4}, num_classes=5,
                         base_width=8, stage_depths=(1, 1, 1, 1))  # fmt: skip
    nn.init.normal_(model.head.fc.weight, std=0.1)  # scores neither uniform nor saturated
    return model.eval()


def test_fully_conv_equals_pooled_when_the_view_is_the_training_crop():
    """A 16x48x48 view, trained on 16x48 crops: the window is the whole res5 map (2x2x2), one
    position, so the two heads give the same scores; a 16x80x112 view (res5 2x3x4) differs."""
    from videogn.engine.evaluate import POOLED, TestHead
    from videogn.models.i3d import res5_size

    model, head = toy_i3d(), TestHead("fully_conv", res5_size(16, 48, 48))
    torch.manual_seed(1)
    views = torch.randn(3, 3, 16, 48, 48)
    with torch.no_grad():
        same = head.probabilities(model, views, contextlib.nullcontext)
        torch.testing.assert_close(same, POOLED.probabilities(model, views, contextlib.nullcontext))
        large = torch.randn(2, 3, 16, 80, 112)
        fully_conv = head.probabilities(model, large, contextlib.nullcontext)
        pooled = POOLED.probabilities(model, large, contextlib.nullcontext)
    assert (fully_conv - pooled).abs().max() > 1e-3
    torch.testing.assert_close(fully_conv.sum(dim=1), torch.ones(2))


def test_a_fully_conv_head_needs_a_window_and_names_the_key():
    from videogn.engine.evaluate import TestHead

    with pytest.raises(ValueError, match="test.head=fully_conv needs"):
        TestHead("fully_conv")
    with pytest.raises(ValueError, match="test.head must be one of"):
        TestHead("center")
