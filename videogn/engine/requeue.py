"""SLURM requeue: a job warned of its time limit checkpoints, then puts itself back in the queue.

SLURM sends the warning signal ``--signal=SIG@seconds`` before the limit (hydra-submitit-launcher
asks for SIGUSR2, ``signal_delay_s`` ahead; ``#SBATCH --signal=USR1@300`` in a plain script).
The training loop stops at the end of the iteration with a checkpoint
(:class:`~videogn.engine.hooks.PreemptionHook`); then rank 0 runs ``scontrol requeue`` of the
job, and the requeued job, started with the same command and run directory, resumes from that
checkpoint. SLURM counts the requeues in ``SLURM_RESTART_COUNT``; past ``max_requeues`` the
job ends instead, saying how to resume. SIGTERM (``scancel``, a preemption) never requeues:
whoever sent it decides what happens next.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

# The time-limit warnings; SIGTERM is not one of them.
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this job (``ARRAY_TASK`` form in an array)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeues_so_far() -> int:
    """How many times SLURM has requeued this job (0 in its first run)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def wants_requeue(signals: list[int | None]) -> bool:
    """Whether a stop asked for by these signals (one per rank, None: none) is a time limit."""
    return any(sig in REQUEUE_SIGNALS for sig in signals if sig is not None)


def request_requeue(max_requeues: int, run_dir: str | Path) -> bool:
    """Put this SLURM job back in the queue, unless it is not one or has used its requeues.

    Call it once the checkpoint is on disk: ``scontrol requeue`` ends the running job.
    Returns whether the requeue was requested.
    """
    job_id = slurm_job_id()
    resume = f"rerun the same command with hydra.run.dir={run_dir} to resume"
    if job_id is None:
        logger.warning("time-limit signal outside a SLURM job: not requeued; %s", resume)
        return False
    done = requeues_so_far()
    if done >= max_requeues:
        logger.warning(
            "SLURM job %s not requeued: it has been requeued %d times, trainer.max_requeues=%d; "
            "%s",
            job_id, done, max_requeues, resume,
        )  # fmt: skip
        return False
    try:
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        logger.error("could not requeue SLURM job %s (%s); %s", job_id, err, resume)
        return False
    logger.warning(
        "requeued SLURM job %s (requeue %d of at most %d): it resumes in %s",
        job_id, done + 1, max_requeues, run_dir,
    )  # fmt: skip
    return True
