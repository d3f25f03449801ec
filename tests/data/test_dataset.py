"""Datasets: item contract, determinism, bad-video policy in training and testing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videogn.data.dataset import (
    TooManyBadVideos,
    VideoClipDataset,
    VideoTestDataset,
    collate_test,
)
from videogn.data.decoders import decode
from videogn.data.lists import VideoRecord
from videogn.data.samplers import TestClipSampler, TrainClipSampler
from videogn.data.transforms import (
    NORMALIZATIONS,
    TestTransform,
    TrainTransform,
    normalize_on_device,
)
from videogn.data.video_writer import write_video

NUM_GOOD = 4


@pytest.fixture(scope="module")
def video_records(tmp_path_factory, make_numbered_frames) -> dict[str, list[VideoRecord]]:
    """Good videos (20 numbered frames, label = i) and bad files (label 9)."""
    root = tmp_path_factory.mktemp("dataset_videos")
    good = []
    for i in range(NUM_GOOD):
        path = root / f"good_{i}.mp4"
        write_video(path, make_numbered_frames(20, seed=i), gop=8)
        good.append(VideoRecord(str(path), i))
    (root / "text.mp4").write_text("not a video")
    (root / "empty.mp4").write_bytes(b"")
    bad = [VideoRecord(str(root / "text.mp4"), 9), VideoRecord(str(root / "empty.mp4"), 9)]
    return {"good": good, "bad": bad}


def train_dataset(records, **kwargs) -> VideoClipDataset:
    return VideoClipDataset(
        records,
        sampler=TrainClipSampler(4, 2),
        transform=TrainTransform(scale_range=(40, 48), crop_size=32),
        **kwargs,
    )


def test_train_item_contract(video_records):
    dataset = train_dataset(video_records["good"])
    item = dataset[2]
    assert set(item) == {"clip", "label", "index"}
    assert item["clip"].shape == (3, 4, 32, 32) and item["clip"].dtype == torch.float32
    assert (item["label"], item["index"]) == (2, 2)
    assert len(dataset) == NUM_GOOD and dataset.failures == []


def test_train_clips_are_reproducible_per_epoch_and_change_between_epochs(video_records):
    a, b = (
        train_dataset(video_records["good"], seed=1),
        train_dataset(video_records["good"], seed=1),
    )
    assert torch.equal(a[0]["clip"], b[0]["clip"])
    epochs = []
    for epoch in range(4):
        a.set_epoch(epoch)
        epochs.append(a[0]["clip"])
    assert any(not torch.equal(epochs[0], other) for other in epochs[1:])


def test_bad_video_is_retried_then_substituted_and_logged(video_records, tmp_path, caplog):
    records = video_records["bad"][:1] + video_records["good"]
    log = tmp_path / "failures.tsv"
    dataset = train_dataset(records, max_retries=1, failure_log=log, max_failure_fraction=1.0)
    item = dataset[0]
    assert item["index"] != 0 and item["label"] == records[item["index"]].label
    bad_path = records[0].path
    assert dataset.failures == [(bad_path, dataset.failures[0][1])]
    assert "cannot open" in dataset.failures[0][1]
    assert bad_path in caplog.text
    assert log.read_text().startswith(f"{bad_path}\t")
    assert "1 of 2 video loads failed" in dataset.failure_report()


def test_validation_reports_a_bad_video_instead_of_replacing_it(video_records):
    """The validation monitor's dataset: a video that fails (after its retries) comes back as
    a failed item, so the monitor counts it as failed and never counts another video twice;
    the validation collate keeps the clips that loaded and the count of those that did not."""
    from videogn.engine.validation import collate_validation

    records = video_records["bad"][:1] + video_records["good"]
    dataset = train_dataset(records, max_retries=1, max_failure_fraction=1.0,
                            substitute_failures=False)  # fmt: skip
    failed = dataset[0]
    assert failed["clip"] is None and failed["index"] == 0 and "cannot open" in failed["error"]
    batch = collate_validation([dataset[i] for i in range(len(records))])
    assert batch["failed"] == 1 and batch["clip"].shape == (NUM_GOOD, 3, 4, 32, 32)
    assert batch["label"].tolist() == [0, 1, 2, 3]


def test_failure_fraction_above_threshold_stops_with_a_report(video_records):
    records = video_records["bad"] + video_records["good"][:1]
    dataset = train_dataset(records, max_failure_fraction=0.2, min_loads=1)
    with pytest.raises(TooManyBadVideos) as caught:
        for i in range(len(records)):
            dataset[i]
    message = str(caught.value)
    assert "above max_failure_fraction=20.0%" in message
    assert any(record.path in message for record in video_records["bad"])


def test_only_bad_videos_exhaust_substitutions(video_records):
    dataset = train_dataset(video_records["bad"], max_substitutions=3, max_failure_fraction=1.0)
    with pytest.raises(TooManyBadVideos, match="4 videos in a row failed"):
        dataset[0]
    assert len(dataset.failures) == 4


def test_training_loader_with_workers_reports_bad_videos(video_records):
    records = video_records["bad"] + video_records["good"]
    loader = DataLoader(
        train_dataset(records, max_failure_fraction=1.0), batch_size=3, num_workers=2
    )
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(records)
    assert all(label < NUM_GOOD for b in batches for label in b["label"].tolist())


def test_test_dataset_yields_all_views_from_one_decode(video_records):
    record = video_records["good"][1]
    sampler = TestClipSampler(4, 2, num_clips=3)
    transform = TestTransform(short_side=48, crop_size=32, num_crops=3)
    dataset = VideoTestDataset([record], sampler=sampler, transform=transform)
    item = dataset[0]
    assert item["error"] is None and (item["label"], item["index"]) == (1, 0)
    assert item["views"].shape == (9, 3, 4, 32, 32)
    # Clip-major: views 3k..3k+2 are the crops of clip k.
    clips = sampler(20)
    for k, indices in enumerate(clips):
        expected = transform(decode(record.path, indices))
        assert torch.equal(item["views"][3 * k : 3 * k + 3], expected)


def test_test_dataset_never_drops_a_failed_video(video_records):
    records = [video_records["good"][0], video_records["bad"][0], video_records["good"][1]]
    dataset = VideoTestDataset(
        records,
        sampler=TestClipSampler(4, 2, num_clips=2),
        transform=TestTransform(short_side=48, crop_size=32),
    )
    failed = dataset[1]
    assert failed["views"].numel() == 0 and "cannot open" in failed["error"]
    batch = collate_test([dataset[i] for i in range(3)])
    assert batch["num_views"].tolist() == [2, 0, 2]
    assert batch["views"].shape == (4, 3, 4, 32, 32)
    assert batch["error"][0] is None and batch["error"][1] == failed["error"]
    assert batch["label"].tolist() == [0, 9, 1] and batch["index"].tolist() == [0, 1, 2]
    scores = torch.split(batch["views"].mean(dim=(1, 2, 3, 4)), batch["num_views"].tolist())
    assert [len(s) for s in scores] == [2, 0, 2]


def test_collate_of_failures_only():
    batch = collate_test([{"views": torch.empty(0), "label": 3, "index": 7, "error": "bad"}])
    assert batch["views"].numel() == 0 and batch["num_views"].tolist() == [0]


def test_dataset_arguments_are_checked(video_records):
    with pytest.raises(ValueError, match="at least one record"):
        train_dataset([])
    with pytest.raises(ValueError, match="max_failure_fraction"):
        train_dataset(video_records["good"], max_failure_fraction=1.5)
    assert np.isfinite(train_dataset(video_records["good"])[0]["clip"].numpy()).all()


def test_uint8_output_through_a_loader_normalizes_to_the_float_batch(video_records):
    """The option the engine can adopt: uint8 batches, normalized where the model runs."""
    records = video_records["good"]
    float_set = train_dataset(records)
    uint8_set = VideoClipDataset(
        records,
        sampler=TrainClipSampler(4, 2),
        transform=TrainTransform(scale_range=(40, 48), crop_size=32, output_dtype="uint8"),
    )
    as_float = next(iter(DataLoader(float_set, batch_size=4)))["clip"]
    as_uint8 = next(iter(DataLoader(uint8_set, batch_size=4, num_workers=1)))["clip"]
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == as_float.shape == (4, 3, 4, 32, 32)
    assert torch.equal(normalize_on_device(as_uint8, *NORMALIZATIONS["torchvision"]), as_float)


def test_uint8_test_views_and_collate(video_records):
    sampler = TestClipSampler(4, 2, num_clips=2)
    records = [video_records["good"][0], video_records["bad"][0], video_records["good"][1]]
    kwargs = dict(short_side=48, crop_size=32, num_crops=3)
    as_float = VideoTestDataset(records, sampler=sampler, transform=TestTransform(**kwargs))
    as_uint8 = VideoTestDataset(
        records, sampler=sampler, transform=TestTransform(**kwargs, output_dtype="uint8")
    )
    batch = collate_test([as_uint8[i] for i in range(3)])
    assert batch["views"].dtype == torch.uint8 and batch["num_views"].tolist() == [6, 0, 6]
    assert batch["views"].is_contiguous(memory_format=torch.channels_last_3d)
    expected = collate_test([as_float[i] for i in range(3)])["views"]
    mean, std = NORMALIZATIONS["torchvision"]
    assert torch.equal(normalize_on_device(batch["views"], mean, std), expected)
