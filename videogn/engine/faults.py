"""Faults that end a run early, named: a data-loader worker killed (most often by the kernel's
out-of-memory killer) and a peer process of the job lost during a collective.

Either way this process cannot go on, and should not try: the iteration in flight is lost, no
checkpoint is written for it, and the run continues from its newest valid checkpoint. The
error raised here says what happened, in which process, and how the run resumes; the entry
point logs it and exits with its code, non-zero, so that ``torchrun --max-restarts=N``
restarts the job and it resumes by itself.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from pathlib import Path

import torch.distributed as dist

from videogn.engine.checkpoint import latest_checkpoint

try:  # the check PyTorch's SIGCHLD handler runs (private: no public API reports it)
    from torch.utils.data._utils.signal_handling import _error_if_any_worker_fails
except ImportError:  # another PyTorch: the errors themselves still name most deaths

    def _error_if_any_worker_fails() -> None:
        return None


EXIT_LOADER_WORKER_KILLED = 4
EXIT_PEER_LOST = 5

# PyTorch's two messages: the SIGCHLD check ("DataLoader worker (pid 123) is killed by
# signal: Killed.") and the loader's own ("DataLoader worker (pid(s) 123, 456) exited
# unexpectedly").
_LOADER_WORKER = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (?:is killed by signal: ([^.]+)|exited)"
)
# What gloo says when the other end of a connection is gone or never answers.
_PEER_GONE = ("connection reset by peer", "connection closed by peer", "connection refused",
              "timed out", "broken pipe")  # fmt: skip


class RunInterrupted(RuntimeError):
    """The run stopped on a fault; the message says what happened and how it resumes."""

    exit_code = 1


class LoaderWorkerKilled(RunInterrupted):
    exit_code = EXIT_LOADER_WORKER_KILLED


class PeerLost(RunInterrupted):
    exit_code = EXIT_PEER_LOST


def _signal_name(description: str | None) -> str | None:
    """The signal that strsignal's text names ("Killed" -> "SIGKILL"); others as given."""
    if not description:
        return None
    for sig in signal.Signals:
        if signal.strsignal(sig) == description.strip():
            return sig.name
    return description.strip()


def _dead_loader_worker_report(wait_s: float = 0.0) -> str:
    """PyTorch's own report of a dead worker of a loader still alive ("" if none).

    A worker killed while it hands a batch over surfaces first as a ConnectionResetError or
    EOFError from the queue, a moment before the kernel makes it a zombie that the check
    sees: ``wait_s`` gives it that moment.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            _error_if_any_worker_fails()
        except RuntimeError as report:
            return str(report)
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.05)


def loader_worker_killed(err: BaseException) -> tuple[str, str | None, str] | None:
    """(pids, signal name or None, PyTorch's words) if ``err`` (or an error it arose from) is a
    loader worker that died, or if PyTorch knows of such a worker now."""
    chain = []
    while err is not None and len(chain) < 8:
        chain.append(err)
        err = err.__cause__ or err.__context__
    match = next(filter(None, (_LOADER_WORKER.search(str(e)) for e in chain)), None)
    if match is None:
        handover = any(isinstance(e, (ConnectionError, EOFError)) for e in chain)
        match = _LOADER_WORKER.search(_dead_loader_worker_report(wait_s=2.0 if handover else 0))
    if match is None:
        return None
    return match.group(1).strip(), _signal_name(match.group(2)), match.group(0)


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the job is gone."""
    if isinstance(err, dist.DistError):
        return True
    message = str(err).lower()
    return "gloo" in message and any(text in message for text in _PEER_GONE)


def resume_hint(run_dir: Path) -> str:
    """Where the run continues from, and how."""
    newest = latest_checkpoint(run_dir)
    where = f"its newest checkpoint, {newest}" if newest else "the start (no checkpoint yet)"
    return (
        f"The run resumes from {where}: under torchrun --max-restarts=N the job restarts "
        f"by itself; otherwise rerun the same command with hydra.run.dir={run_dir}"
    )


def explain(err: BaseException, rank: int, run_dir: Path) -> RunInterrupted | None:
    """The named fault behind ``err``, or None if it is not one of those named here."""
    killed = loader_worker_killed(err)
    if killed is not None:
        pids, signal_name, report = killed
        oom = "most often the kernel's out-of-memory killer (`dmesg` shows it)"
        if signal_name is None:
            how = f"died without a signal named ({report}): {oom}, or a crash in decoding"
        else:
            how = f"killed by {signal_name}" + (f": {oom}" if signal_name == "SIGKILL" else "")
        return LoaderWorkerKilled(
            f"a data-loader worker (pid {pids}) of training process rank {rank} {how}. If "
            "memory ran out, lower data.num_workers or data.batch_size, or ask for more memory. "
            f"No checkpoint was written for the unfinished iteration. {resume_hint(run_dir)}"
        )
    if peer_lost(err):
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return PeerLost(
            f"rank {rank} lost another process of the job during a collective ({first_line}): "
            "a peer died or was stopped. This process stops without writing a checkpoint, "
            f"since the collective was left half-done. {resume_hint(run_dir)}"
        )
    return None


@contextlib.contextmanager
def named_faults(rank: int, run_dir: str | Path):
    """Re-raise a known fault as a :class:`RunInterrupted` that names it (the cause chained)."""
    try:
        yield
    except RunInterrupted:
        raise
    except Exception as err:  # a loader worker's death can surface as an OSError or EOFError
        # The run ends here. PyTorch's SIGCHLD handler would raise its dead-worker report at
        # whatever line runs next, in the middle of the naming; the check is made directly.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        named = explain(err, rank, Path(run_dir))
        if named is None:
            raise
        raise named from err
