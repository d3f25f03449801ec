"""When a SLURM job requeues itself: a time-limit signal, inside a job, with requeues left; the
request goes to a stand-in ``scontrol`` on PATH that records its arguments."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from videogn.engine.requeue import request_requeue, slurm_job_id, wants_requeue


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch) -> Path:
    """A ``scontrol`` that appends its arguments to a file, first on PATH; returns the file."""
    calls = tmp_path / "scontrol_calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                 "SLURM_RESTART_COUNT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return calls


def test_time_limit_signals_requeue_and_a_stop_does_not():
    assert wants_requeue([None, signal.SIGUSR2])  # submitit's warning, on one rank
    assert wants_requeue([signal.SIGUSR1])  # #SBATCH --signal=USR1@300
    assert not wants_requeue([signal.SIGTERM, None])  # scancel, a preemption: not ours to undo
    assert not wants_requeue([None, None])


def test_a_job_requeues_itself_until_max_requeues(fake_scontrol, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with caplog.at_level(logging.WARNING):
        assert request_requeue(max_requeues=2, run_dir=tmp_path)
    assert fake_scontrol.read_text() == "requeue 4242\n"
    assert "requeued SLURM job 4242 (requeue 1 of at most 2)" in caplog.text

    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # SLURM counts the requeues done
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not request_requeue(max_requeues=2, run_dir=tmp_path)
    assert fake_scontrol.read_text() == "requeue 4242\n"  # no second call
    assert "not requeued: it has been requeued 2 times, trainer.max_requeues=2" in caplog.text
    assert f"hydra.run.dir={tmp_path}" in caplog.text


def test_array_tasks_are_requeued_by_their_own_id(fake_scontrol, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "5001")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "5000")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm_job_id() == "5000_1"
    assert request_requeue(max_requeues=1, run_dir=tmp_path)
    assert fake_scontrol.read_text() == "requeue 5000_1\n"


def test_outside_slurm_or_with_a_failing_scontrol_nothing_is_requeued(
    fake_scontrol, monkeypatch, tmp_path, caplog
):
    assert not request_requeue(max_requeues=3, run_dir=tmp_path)
    assert not fake_scontrol.exists()
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    (Path(str(fake_scontrol.parent / "bin" / "scontrol"))).write_text("#!/bin/sh\nexit 1\n")
    with caplog.at_level(logging.ERROR):
        assert not request_requeue(max_requeues=3, run_dir=tmp_path)
    assert "could not requeue SLURM job 7" in caplog.text
