"""Which errors are named faults, and what their message tells the user (PyTorch's and gloo's
own wording, as they raise it)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from videogn.engine.checkpoint import checkpoint_path
from videogn.engine.faults import (
    EXIT_LOADER_WORKER_KILLED,
    EXIT_PEER_LOST,
    LoaderWorkerKilled,
    PeerLost,
    explain,
    named_faults,
)


def test_a_loader_worker_killed_by_sigkill_is_named_with_the_oom_killer(tmp_path):
    checkpoint = checkpoint_path(tmp_path, 6)
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    err = RuntimeError("DataLoader worker (pid 4321) is killed by signal: Killed. ")
    named = explain(err, rank=1, run_dir=tmp_path)
    assert isinstance(named, LoaderWorkerKilled) and named.exit_code == EXIT_LOADER_WORKER_KILLED
    message = str(named)
    assert "worker (pid 4321) of training process rank 1 killed by SIGKILL: most often" in message
    assert "out-of-memory killer" in message and "data.num_workers" in message
    assert f"its newest checkpoint, {checkpoint}" in message
    assert f"hydra.run.dir={tmp_path}" in message


def test_a_worker_that_exited_and_other_signals_are_named_without_the_oom_hint(tmp_path):
    err = RuntimeError("DataLoader worker (pid(s) 11, 12) exited unexpectedly")
    message = str(explain(err, rank=0, run_dir=tmp_path))
    assert "(pid 11, 12) of training process rank 0 died without a signal named" in message
    assert "out-of-memory killer" in message  # its SIGKILL is the likely cause all the same
    assert "the start (no checkpoint yet)" in message
    err = RuntimeError("DataLoader worker (pid 9) is killed by signal: Segmentation fault. ")
    message = str(explain(err, rank=0, run_dir=tmp_path))
    assert "killed by SIGSEGV." in message and "out-of-memory" not in message


def test_a_worker_death_that_surfaces_as_a_reset_connection_is_named(tmp_path):
    """A worker killed while it hands over a batch: the loader raises ConnectionResetError,
    and PyTorch's report is the error it arose in (or comes later, from its SIGCHLD check)."""
    err = ConnectionResetError(104, "Connection reset by peer")
    err.__context__ = RuntimeError("DataLoader worker (pid 77) is killed by signal: Killed. ")
    named = explain(err, rank=0, run_dir=tmp_path)
    assert isinstance(named, LoaderWorkerKilled) and "(pid 77)" in str(named)
    assert explain(ConnectionResetError(104, "reset"), rank=0, run_dir=tmp_path) is None


def test_a_lost_peer_is_named_and_other_errors_are_not(tmp_path):
    gloo = RuntimeError(
        "[third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
        "[127.0.0.1]:42221"
    )
    named = explain(gloo, rank=0, run_dir=tmp_path)
    assert isinstance(named, PeerLost) and named.exit_code == EXIT_PEER_LOST
    assert "rank 0 lost another process of the job" in str(named)
    assert "without writing a checkpoint" in str(named)
    assert isinstance(explain(dist.DistBackendError("NCCL error"), 0, tmp_path), PeerLost)
    assert explain(RuntimeError("shape mismatch"), rank=0, run_dir=tmp_path) is None


def test_named_faults_reraises_a_fault_named_and_anything_else_as_it_was(tmp_path):
    with pytest.raises(LoaderWorkerKilled) as caught, named_faults(0, tmp_path):
        raise RuntimeError("DataLoader worker (pid 5) is killed by signal: Killed. ")
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError, match="^shape mismatch$"), named_faults(0, tmp_path):
        raise RuntimeError("shape mismatch")
