"""A decoder that blocks on one file (as decoders do on some damaged streams) does not hang
loading: past ``decode_timeout_s`` the video fails with the reason, like any bad video, in
the loading process itself and in DataLoader worker processes, and only one thread per hung
video is left behind."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from videogn.cli.data import main as data_main
from videogn.config import DataConfig
from videogn.data.check import check_videos
from videogn.data.dataset import VideoClipDataset, VideoTestDataset
from videogn.data.decode_deadline import THREAD_NAME
from videogn.data.decoders import BACKENDS
from videogn.data.lists import VideoRecord
from videogn.data.pyav_backend import PyAVReader
from videogn.data.samplers import TestClipSampler, TrainClipSampler
from videogn.data.transforms import TestTransform, TrainTransform
from videogn.data.video_writer import write_video
from videogn.engine.builders.data import build_data

LIMIT_S = 0.5


class BlocksOnHangFiles(PyAVReader):
    """PyAV, except that decoding a file named ``hang*`` blocks until ``release`` is set (in a
    DataLoader worker: until the worker exits); ``hung`` lists the threads it blocked."""

    release = threading.Event()
    hung: list[threading.Thread] = []

    def decode(self, frame_indices):
        if Path(self.path).name.startswith("hang"):
            self.hung.append(threading.current_thread())
            self.release.wait()
        return super().decode(frame_indices)


@pytest.fixture
def blocking_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, "blocks", BlocksOnHangFiles)
    monkeypatch.setattr(BlocksOnHangFiles, "release", threading.Event())
    monkeypatch.setattr(BlocksOnHangFiles, "hung", [])
    yield "blocks"
    BlocksOnHangFiles.release.set()  # the blocked decoders of this process return at last
    for thread in BlocksOnHangFiles.hung:
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def records(tmp_path_factory, make_numbered_frames) -> tuple[list[VideoRecord], VideoRecord]:
    """Four good videos (labels 0..3) and a copy of one that the test backend hangs on."""
    root = tmp_path_factory.mktemp("videos")
    good = []
    for i in range(4):
        write_video(root / f"good_{i}.mp4", make_numbered_frames(20, seed=i), gop=8)
        good.append(VideoRecord(str(root / f"good_{i}.mp4"), i))
    shutil.copy(root / "good_0.mp4", root / "hang.mp4")
    return good, VideoRecord(str(root / "hang.mp4"), 9)


def train_set(records, backend, **kwargs) -> VideoClipDataset:
    return VideoClipDataset(
        records,
        sampler=TrainClipSampler(4, 2),
        transform=TrainTransform(scale_range=(40, 48), crop_size=32),
        backend=backend,
        decode_timeout_s=LIMIT_S,
        max_failure_fraction=1.0,
        **kwargs,
    )


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_a_hung_decode_fails_the_video_once_and_a_substitute_is_loaded(records, blocking_backend):
    good, hang = records
    dataset = train_set([good[1], hang], blocking_backend, max_retries=2)
    item = dataset[1]
    assert item["label"] == 1 and item["index"] == 0  # the substitute, decoded in time
    assert dataset.failures == [
        (
            hang.path,
            f"decoding did not finish within {LIMIT_S:g} s (data.decode_timeout_s); "
            "the decoder may hang on a damaged stream",
        )
    ]
    assert len(BlocksOnHangFiles.hung) == 1  # not retried: one stranded thread


def test_test_videos_report_the_timeout_and_only_one_thread_per_hang_is_left(
    records, blocking_backend
):
    good, hang = records
    dataset = VideoTestDataset(
        [hang, *good],
        sampler=TestClipSampler(4, 2, num_clips=2),
        transform=TestTransform(short_side=48, crop_size=32),
        backend=blocking_backend,
        decode_timeout_s=LIMIT_S,
    )
    failed = dataset[0]
    assert failed["views"].numel() == 0 and "did not finish within 0.5 s" in failed["error"]
    for _ in range(5):  # many items after the hang: one helper thread serves them all
        for index in range(1, len(good) + 1):
            assert dataset[index]["error"] is None
    [hung] = BlocksOnHangFiles.hung
    assert hung.is_alive()
    assert len([t for t in decode_threads() if t is not hung]) == 1  # one serves the rest
    BlocksOnHangFiles.release.set()  # the decoder returns at last: its thread ends by itself
    hung.join(timeout=30)
    assert not hung.is_alive() and len(decode_threads()) == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_finishes_its_epoch_past_a_hung_video(
    num_workers, records, blocking_backend, tmp_path
):
    good, hang = records
    failure_log = tmp_path / "failures.tsv"
    loader = DataLoader(
        train_set([*good, hang], blocking_backend, failure_log=failure_log),
        batch_size=5,
        num_workers=num_workers,
        timeout=120 if num_workers else 0,  # a hang of the limit itself fails, not the test
    )
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == 5
    assert all(label < 4 for b in batches for label in b["label"].tolist())
    lines = failure_log.read_text().splitlines()
    assert lines == [f"{hang.path}\tdecoding did not finish within 0.5 s (data.decode_timeout_s);"
                     " the decoder may hang on a damaged stream"]  # fmt: skip


def test_the_limit_is_a_data_key_checked_when_built():
    cfg = OmegaConf.structured(DataConfig(train_list="t.txt", val_list="v.txt"))
    assert build_data(cfg).decode_timeout_s == 60.0
    cfg.decode_timeout_s = 0  # no limit
    assert build_data(cfg).decode_timeout_s is None
    cfg.decode_timeout_s = -1
    with pytest.raises(ValueError, match="data.decode_timeout_s must be a positive number"):
        build_data(cfg)


@pytest.mark.parametrize("workers", [1, 2])
def test_videogn_data_check_marks_a_hung_video_unreadable(workers, records, blocking_backend):
    good, hang = records
    items = [(r.path, r.path) for r in (good[0], hang, good[1])]
    results = check_videos(items, backend=blocking_backend, workers=workers, progress=False,
                           timeout_s=LIMIT_S)  # fmt: skip
    assert [r.status for r in results] == ["ok", "unreadable", "ok"]
    assert results[1].reason == (
        f"decoding did not finish within {LIMIT_S:g} s (--timeout-s); "
        "the decoder may hang on a damaged stream"
    )


def test_videogn_data_check_refuses_a_negative_time_limit(capsys):
    with pytest.raises(SystemExit):
        data_main(["check", "list.txt", "--timeout-s", "-1"])
    assert "expected seconds >= 0 (0: no limit), got '-1'" in capsys.readouterr().err
