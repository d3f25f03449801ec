"""Faults a long run meets, end to end on the demo, each ending in a run equal to an
uninterrupted one (deterministic mode): a torchrun worker SIGKILLed mid-epoch (the job restarts
itself once), a data-loader worker SIGKILLed (the OOM killer's signal), and a SLURM time-limit
signal (the job requeues itself through a stand-in ``scontrol``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from videogn.data.demo import ensure_demo_dataset
from videogn.engine.checkpoint import latest_checkpoint, load_checkpoint
from videogn.engine.metrics import read_metrics

pytestmark = pytest.mark.slow

DEMO = {
    "num_classes": 4,
    "train_videos_per_class": 4,
    "val_videos_per_class": 2,
    "frames_per_video": 24,
    "frame_size": 32,
    "event_gap": 8,
    "event_length": 2,
}


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("demo_cache")
    ensure_demo_dataset(cache, **DEMO)
    return cache


def overrides(
    demo_cache: Path,
    run_dir: Path | None,
    *,
    demo: dict = DEMO,
    epochs: int = 2,
    loader_workers: int = 0,
) -> list[str]:
    """The demo shrunk to seconds: 16 training videos of 32x32 (``demo``), 2 clips per process,
    2 epochs, checkpoints every 2 iterations, the 8-video test at the end."""
    params = [f"data.demo.params.{k}={v}" for k, v in demo.items() if k != "num_classes"]
    return [
        *([f"hydra.run.dir={run_dir}"] if run_dir else []),
        f"data.demo.cache_dir={demo_cache}",
        *params,
        f"data.num_classes={DEMO['num_classes']}",
        "data.batch_size=2",
        f"data.num_workers={loader_workers}",
        "data.scale_range=[32,36]",
        "data.crop_size=32",
        "sampler=8x2",
        f"optim.epochs={epochs}",
        "optim.base_lr=0.4",
        "test.short_side=48",
        "test.crop_size=48",
        "test.num_workers=0",
        "trainer.num_threads=1",
        "trainer.progress_bar=false",
        "trainer.precise_bn.num_batches=2",
        "trainer.log_period=1",
        "trainer.checkpoint_period=2",
        "deterministic=true",
    ]


def torchrun(nproc: int, *args: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc_per_node={nproc}", "--max-restarts=1", "-m", "videogn.cli.train",
            *args]  # fmt: skip


def start(args: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 150) -> str:
    """The command's output once it ends; one that hangs is aborted and its output shown."""
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for worker in children(process.pid):  # torchrun's workers would outlive it
            os.kill(worker, signal.SIGKILL)
        process.kill()
        raise AssertionError(f"hung: {process.communicate()[0][-6000:]}") from None


def train_records(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(read_metrics(metrics, "train")) if metrics.exists() else 0


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"ended before the fault: {process.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run did not get to the fault in time")
        time.sleep(0.01)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def loader_workers_of(pid: int) -> list[int]:
    """The loader workers of a training process: its forked children, which run its command
    line (multiprocessing's resource tracker, also a child, runs another)."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [c for c in children(pid) if Path(f"/proc/{c}/cmdline").read_bytes() == command]


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def assert_same_results(run_dir: Path, reference: Path) -> None:
    """Final weights and per-video test scores bit-identical to the uninterrupted run's."""
    got, expected = load_checkpoint(run_dir), load_checkpoint(reference)
    assert got["position"] == expected["position"]
    for name, weight in expected["model"].items():
        assert torch.equal(got["model"][name], weight), name
    scores = [np.load(d / "video_scores.npz")["scores"] for d in (run_dir, reference)]
    assert np.array_equal(*scores)


@pytest.fixture(scope="module")
def two_process_reference(demo_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference2")
    process = start(torchrun(2, *overrides(demo_cache, run_dir)))
    output = finish(process)
    assert process.returncode == 0, output[-4000:]
    return run_dir


@pytest.mark.parametrize(
    "kill_after, fixed_run_dir",
    [(2, True), (3, False), (5, True)],
    ids=["after-checkpoint-2", "mid-epoch-no-run-dir", "second-epoch"],
)
def test_torchrun_restarts_once_after_a_worker_is_killed(
    demo_cache, tmp_path, two_process_reference, kill_after, fixed_run_dir
):
    """README's command: torchrun --max-restarts=1; rank 1 SIGKILLed once rank 0 logged
    ``kill_after`` of the 8 iterations. Without hydra.run.dir, hydra names a new directory in
    the restarted attempt; the run must still go on in the first one."""
    run_dir = tmp_path / "run" if fixed_run_dir else None
    process = start(torchrun(2, *overrides(demo_cache, run_dir)), cwd=tmp_path)
    try:
        if run_dir is None:
            wait_for(lambda: list(tmp_path.glob("outputs/demo/*/metrics.jsonl")), process)
            run_dir = next(tmp_path.glob("outputs/demo/*/metrics.jsonl")).parent
        # Rank 0 logs an iteration before its checkpoint: from the third on, the second's is
        # on disk; "after-checkpoint-2" waits for the file itself.
        wait_for(
            lambda: train_records(run_dir) >= kill_after and latest_checkpoint(run_dir), process
        )
        (rank1,) = [pid for pid in children(process.pid) if environment(pid)["RANK"] == "1"]
        os.kill(rank1, signal.SIGKILL)
    finally:
        output = finish(process)
    assert process.returncode == 0, output[-6000:]
    # The survivor said why it stopped, the job restarted by itself, once, in the same dir.
    assert "rank 0 lost another process of the job during a collective" in output
    assert f"torchrun restart 1 of this job: continuing the run in {run_dir}" in output
    assert "resumed from" in output and "videogn-train finished after 8 iterations" in output
    assert_same_results(run_dir, two_process_reference)


# One process, one loader worker, one epoch of 32 videos (16 iterations): the loader and SLURM
# tests. The worker is killed while it still has batches of the epoch to make: one that has
# made them all dies unnoticed, as a finished one would, and nothing is lost.
LONG_EPOCH = {**DEMO, "train_videos_per_class": 8}
ONE_PROCESS = {"demo": LONG_EPOCH, "epochs": 1, "loader_workers": 1}


@pytest.fixture(scope="module")
def long_epoch_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("long_epoch_cache")
    ensure_demo_dataset(cache, **LONG_EPOCH)
    return cache


@pytest.fixture(scope="module")
def one_process_reference(long_epoch_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference1")
    process = start(torchrun(1, *overrides(long_epoch_cache, run_dir, **ONE_PROCESS)))
    output = finish(process)
    assert process.returncode == 0, output[-4000:]
    return run_dir


def test_a_killed_loader_worker_is_named_and_the_job_restarts_itself(
    long_epoch_cache, tmp_path, one_process_reference
):
    """SIGKILL, the OOM killer's signal, to the training process's loader worker mid-epoch."""
    run_dir = tmp_path / "run"
    process = start(torchrun(1, *overrides(long_epoch_cache, run_dir, **ONE_PROCESS)))
    try:
        wait_for(lambda: train_records(run_dir) >= 3, process)  # iteration 2's checkpoint
        (trainer,) = children(process.pid)
        wait_for(lambda: loader_workers_of(trainer), process)  # none between two loaders
        loader_workers = loader_workers_of(trainer)
        # Frozen first, so that it cannot finish the epoch's batches while the test looks: it
        # is at most 3 ahead of the iterations logged (one in hand, 2 prefetched).
        os.kill(loader_workers[0], signal.SIGSTOP)
        assert train_records(run_dir) + 3 < 16, "the worker had made all its batches"
        os.kill(loader_workers[0], signal.SIGKILL)
    finally:
        output = finish(process)
    assert process.returncode == 0, output[-6000:]
    # PyTorch names the signal, or (a worker killed mid-handover) only that it died
    named = f"a data-loader worker (pid {loader_workers[0]}) of training process rank 0 "
    assert named + "killed by SIGKILL: most often" in output or named + "died" in output
    assert "the kernel's out-of-memory killer (`dmesg` shows it)" in output
    assert "under torchrun --max-restarts=N the job restarts by itself" in output
    assert "failed (exitcode: 4)" in output  # the named exit, which torchrun restarts
    assert "torchrun restart 1 of this job" in output and "resumed from" in output
    assert_same_results(run_dir, one_process_reference)


def test_slurm_time_limit_requeues_the_job_which_resumes_to_the_same_result(
    long_epoch_cache, tmp_path, one_process_reference
):
    """SIGUSR2 (hydra-submitit-launcher's time-limit warning) to a SLURM task: a checkpoint,
    then ``scontrol requeue JOB`` (a stand-in on PATH records it); the requeued job (the same
    command, SLURM_RESTART_COUNT=1) finishes equal to the uninterrupted run."""
    calls = tmp_path / "scontrol_calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
             "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}  # fmt: skip
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "videogn.cli.train",
            *overrides(long_epoch_cache, run_dir, **ONE_PROCESS)]  # fmt: skip
    process = start(args, env=slurm)
    try:
        wait_for(lambda: train_records(run_dir) >= 2, process)
        process.send_signal(signal.SIGUSR2)
    finally:
        output = finish(process)
    assert process.returncode == 0, output[-6000:]
    assert calls.read_text() == "requeue 4242\n"
    assert "requeued SLURM job 4242 (requeue 1 of at most 10)" in output
    stopped_at = load_checkpoint(run_dir)["position"]["global_iteration"]
    assert 2 <= stopped_at < 16 and not (run_dir / "results.json").exists()

    # The requeued job: SLURM starts the same command again.
    process = start(args, env={**slurm, "SLURM_RESTART_COUNT": "1"})
    output = finish(process)
    assert process.returncode == 0, output[-6000:]
    assert f"{stopped_at} in all" in output  # resumed where the time limit stopped it
    assert calls.read_text() == "requeue 4242\n"  # finished: no further requeue
    assert_same_results(run_dir, one_process_reference)
