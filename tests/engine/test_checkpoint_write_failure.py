"""A checkpoint write that fails (a full disk, an I/O error) never damages the previous
checkpoints, and the run warns, keeps training and writes the next checkpoint.

The failure is injected at the write itself: ``torch.save`` writes part of the file and then
raises ``OSError(ENOSPC)`` on a chosen call (what a disk that fills mid-write does), or
``os.fsync`` raises ``OSError(EIO)`` (how a network filesystem reports a lost write)."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogn.data.demo import ensure_demo_dataset
from videogn.engine.checkpoint import (
    list_checkpoints,
    read_checkpoint_file,
    save_checkpoint,
    try_save_checkpoint,
)
from videogn.engine.metrics import MetricsWriter, read_metrics

# A child videogn-train whose torch.save fails on the calls listed in FAIL_AT (1-based, comma
# separated), after writing part of the file.
FULL_DISK_ON_CALL = """
import errno, os, sys, torch
real_save, calls = torch.save, [0]
def save_on_a_disk_that_fills(obj, f, *args, **kwargs):
    calls[0] += 1
    if str(calls[0]) in os.environ["FAIL_AT"].split(","):
        f.write(b"PK\\x03\\x04" + bytes(4096))  # the part that fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(obj, f, *args, **kwargs)
torch.save = save_on_a_disk_that_fills
from videogn.cli.train import main
sys.argv[0] = "videogn-train"
main()
"""

DEMO = dict(num_classes=4, train_videos_per_class=4, val_videos_per_class=1,
            frames_per_video=24, frame_size=32, event_gap=8, event_length=2)  # fmt: skip


def train(cache: Path, run_dir: Path, fail_at: str | None) -> subprocess.CompletedProcess:
    """4 iterations with a checkpoint after each, the newest 3 kept."""
    params = [f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"]
    overrides = [
        f"hydra.run.dir={run_dir}", f"data.demo.cache_dir={cache}", *params,
        "data.num_classes=4", "data.batch_size=4", "data.num_workers=0", "sampler=8x2",
        "data.scale_range=[32,36]", "data.crop_size=32", "optim.epochs=1",
        "trainer.num_threads=1", "trainer.progress_bar=false", "trainer.test_at_end=false",
        "trainer.precise_bn.num_batches=1", "trainer.val_period=0", "deterministic=true",
        "trainer.checkpoint_period=1", "trainer.keep_checkpoints=3",
    ]  # fmt: skip
    code = ["-c", FULL_DISK_ON_CALL] if fail_at else ["-m", "videogn.cli.train"]
    env = {**os.environ, "FAIL_AT": str(fail_at or 0)}
    return subprocess.run([sys.executable, *code, *overrides], env=env, timeout=300,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


@pytest.mark.slow  # two real 4-iteration runs
def test_a_full_disk_at_one_checkpoint_keeps_the_others_and_the_run_finishes(tmp_path):
    cache = tmp_path / "demo"
    ensure_demo_dataset(cache, **DEMO)
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    assert train(cache, clean, None).returncode == 0
    result = train(cache, faulty, fail_at="3")  # the checkpoint of iteration 3
    log = result.stdout
    assert result.returncode == 0, log[-4000:]
    folder = faulty / "checkpoints"
    assert (
        "checkpoint of iteration 3 not written (ENOSPC: [Errno 28] No space left on device); "
        f"the previous checkpoints are untouched (newest: {folder / 'iter_00000002.pt'}); "
        "training goes on and the next checkpoint tries again"
    ) in log
    assert "videogn-train finished after 4 iterations" in log
    assert sorted(p.name for p in folder.iterdir()) == [  # no partial file left behind
        "iter_00000001.pt", "iter_00000002.pt", "iter_00000004.pt"
    ]  # fmt: skip
    read_checkpoint_file(folder / "iter_00000001.pt")  # whole (the clean run pruned its own)
    for iteration in (2, 4):  # whole, and the same as the uninterrupted run's
        name = f"iter_{iteration:08d}.pt"
        got = read_checkpoint_file(folder / name)["model"]
        want = read_checkpoint_file(clean / "checkpoints" / name)["model"]
        assert all(torch.equal(got[k], want[k]) for k in want), name


@pytest.mark.slow  # a real 4-iteration run
def test_a_run_whose_last_checkpoints_fail_finishes_and_says_where_a_resume_starts(tmp_path):
    cache = tmp_path / "demo"
    ensure_demo_dataset(cache, **DEMO)
    result = train(cache, tmp_path / "run", fail_at="3,4")
    log = result.stdout
    assert result.returncode == 0, log[-4000:]
    assert log.count("not written (ENOSPC") == 2
    second = tmp_path / "run" / "checkpoints" / "iter_00000002.pt"
    assert (
        "the run ended (finished) without a checkpoint of its last state (iteration 4): the "
        f"write failed; a resume starts from {second}"
    ) in log
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [
        "iter_00000001.pt", "iter_00000002.pt"
    ]  # fmt: skip


def failing_fsync(fd):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


@pytest.mark.parametrize("fault", ["ENOSPC in the write", "EIO at fsync", "read-only folder"])
def test_a_failed_write_leaves_the_previous_checkpoints_whole(fault, tmp_path, monkeypatch, caplog):
    first = save_checkpoint({"model": {"w": torch.ones(3)}}, tmp_path, 1, keep=1)
    before = first.read_bytes()
    if fault == "ENOSPC in the write":

        def save_on_a_full_disk(obj, f, *args, **kwargs):
            f.write(b"PK\x03\x04" + bytes(1024))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    elif fault == "EIO at fsync":
        monkeypatch.setattr(os, "fsync", failing_fsync)
    else:  # what open() raises in a read-only folder (root ignores chmod, so raise it here)
        real_open = open

        def read_only_open(path, mode="r", *args, **kwargs):
            if "w" in mode and Path(path).parent == first.parent:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr("builtins.open", read_only_open)
    with caplog.at_level(logging.WARNING):
        assert try_save_checkpoint({"model": {"w": torch.zeros(3)}}, tmp_path, 2, keep=1) is None
    monkeypatch.undo()
    assert "checkpoint of iteration 2 not written" in caplog.text
    assert f"newest: {first}" in caplog.text
    assert list_checkpoints(tmp_path) == [first] and first.read_bytes() == before
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left
    assert torch.equal(read_checkpoint_file(first)["model"]["w"], torch.ones(3))


def test_metrics_that_cannot_be_written_warn_once_and_the_run_goes_on(tmp_path, caplog):
    writer = MetricsWriter(tmp_path / "gone", tensorboard=False)  # its folder does not exist
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            writer.write("train", step, loss=1.0)
    assert caplog.text.count("metrics not written") == 1
    (tmp_path / "gone").mkdir()
    writer.write("train", 3, loss=0.5)  # writes again once the disk has room
    assert read_metrics(tmp_path / "gone" / "metrics.jsonl") == [
        {"phase": "train", "step": 3, "loss": 0.5}
    ]
