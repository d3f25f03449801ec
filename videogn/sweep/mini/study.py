"""Run the mini Table 8 study: 2D pretraining, inflation, the task, then every (cell, seed).

Stages, each cached or resumable, so rerunning the same command continues where it stopped:

1. :mod:`videogn.sweep.mini.pretrain2d` trains the BN and the GN 2D nets side by side (one
   process and one thread each) and saves them in torchvision's layout;
2. ``videogn-inflate`` turns each into an I3D checkpoint, as the Kinetics recipe does with
   the ImageNet files; the runs find them through ``VIDEOGN_MINI_PRETRAINED_BN`` / ``_GN``;
3. :mod:`videogn.sweep.mini.flicker_task` generates the videos;
4. every (cell, seed) is one ``videogn-train`` process with one compute thread, two at a time.
   A run whose directory holds ``results.json`` is skipped; an unfinished one resumes from its
   last checkpoint (the engine's auto-resume in its run directory).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from videogn.engine.evaluate import RESULTS_FILE
from videogn.sweep.launch import experiment_name
from videogn.sweep.mini.pretrain2d import Pretrained2d, ensure_pretrained_2d

logger = logging.getLogger(__name__)

PRETRAINED_ENV = {"bn": "VIDEOGN_MINI_PRETRAINED_BN", "gn": "VIDEOGN_MINI_PRETRAINED_GN"}
# The I3D every mini cell trains (conf/model/i3d_tiny.yaml, norm.num_groups of the GN cells).
MINI_I3D_ARGS = ["--base-width", "8", "--stage-depths", "1,1,1,1"]
MINI_GN_GROUPS = 4
# Take 3's task: videos long enough for the paper's 64-frame window (32x2 and 64x1) and a
# 10-clip test spread over 16 more frames; the rest is take 2's task.
TAKE3_TASK = {"frames_per_video": 80}
FRAME_CACHE_DIR = "decoded_frames"  # beside the task's videos, shared by every run


@dataclass(frozen=True)
class Job:
    """One training run: an experiment file at one seed, in its own directory."""

    experiment: str
    seed: int
    run_dir: Path
    extra_overrides: tuple[str, ...] = ()  # this run's own (after the study's)
    extra_env: tuple[tuple[str, str], ...] = ()  # (name, value) pairs added to the study's

    @property
    def done(self) -> bool:
        return (self.run_dir / RESULTS_FILE).is_file()

    def command(self, overrides: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "videogn.cli.train",
            f"experiment={self.experiment}",
            f"seed={self.seed}",
            f"hydra.run.dir={self.run_dir}",
            *overrides,
            *self.extra_overrides,
        ]


def make_jobs(experiments: list[str], seeds: list[int], sweep_dir: Path) -> list[Job]:
    """Seed-major (every cell at seed 0 first), so a cut-short study has whole seeds."""
    return [
        Job(experiment, seed, Path(sweep_dir) / f"{experiment_name(experiment)}_seed{seed}")
        for seed in seeds
        for experiment in experiments
    ]


def run_jobs(jobs: list[Job], overrides: list[str], env: dict, max_parallel: int = 2) -> int:
    """Run the unfinished jobs, ``max_parallel`` at a time; returns how many failed.

    Each run's stdout and stderr go to ``<run dir>.log`` beside its directory.
    """
    todo = [job for job in jobs if not job.done]
    for job in jobs:
        if job.done:
            logger.info("skipping %s: already tested", job.run_dir.name)
    running: list[tuple[Job, subprocess.Popen, object]] = []
    failed = 0
    while todo or running:
        while todo and len(running) < max_parallel:
            job = todo.pop(0)
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.run_dir.with_suffix(".log"), "ab")  # noqa: SIM115 (closed below)
            process = subprocess.Popen(
                job.command(overrides),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, **dict(job.extra_env)},
            )
            logger.info("started %s (pid %d)", job.run_dir.name, process.pid)
            running.append((job, process, log))
        time.sleep(1.0)
        for entry in [e for e in running if e[1].poll() is not None]:
            job, process, log = entry
            log.close()
            running.remove(entry)
            ok = process.returncode == 0 and job.done
            failed += not ok
            outcome = "finished" if ok else "FAILED"
            logger.info("%s %s (exit %d)", outcome, job.run_dir.name, process.returncode)
    return failed


def inflate(
    pretrained: Pretrained2d, norm: str, num_2d_classes: int, num_groups: int = MINI_GN_GROUPS
) -> Path:
    """``videogn-inflate`` the 2D net into the mini I3D, next to it (once).

    The 2D classifier is kept (``--num-classes`` = its classes), so every video run, which
    has 8 classes, drops it and initializes its own classifier from its seed.
    """
    destination = pretrained.weights.with_name(f"i3d_{norm}.pt")
    if destination.is_file():
        return destination
    command = [sys.executable, "-m", "videogn.cli.inflate", str(pretrained.weights)]
    command += [str(destination), "--norm", norm, *MINI_I3D_ARGS, "--strict"]
    command += ["--num-classes", str(num_2d_classes)]
    if norm == "gn":
        command += ["--num-groups", str(num_groups)]
    logger.info("+ %s", " ".join(command))
    subprocess.run(command, check=True)
    return destination


def pretrain_and_inflate(cache_dir: Path, pretrain_params: dict) -> dict[str, dict]:
    """Both 2D nets (trained side by side, one process each, when not cached), inflated;
    per norm: the 2D record and the inflated checkpoint's path."""
    norms = ("bn", "gn")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = []
    for norm in norms:
        params = json.dumps({**pretrain_params, "norm": norm})
        command = [sys.executable, "-m", "videogn.sweep.mini.pretrain2d", str(cache_dir), params]
        processes.append(subprocess.Popen(command, env=env))
    for norm, process in zip(norms, processes, strict=True):
        if process.wait() != 0:
            raise RuntimeError(
                f"2D pretraining of the {norm} net failed (exit {process.returncode})"
            )
    stage = {}
    for norm in norms:
        pretrained = ensure_pretrained_2d(cache_dir, norm=norm, **pretrain_params)
        path = inflate(pretrained, norm, pretrained.record["num_classes"])
        stage[norm] = {"record": pretrained.record, "inflated": path}
    return stage


def study_env(stage: dict[str, dict]) -> dict:
    """The environment every run gets: the inflated checkpoints, one thread per library."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for norm, entry in stage.items():
        env[PRETRAINED_ENV[norm]] = str(entry["inflated"])
    return env


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEOGN_CACHE") or "~/.cache/videogn").expanduser()


def _notes(argv: list[str], jobs: list[Job], minutes: dict, loads: tuple, sweep_dir, task) -> str:
    from videogn.sweep.mini.report import machine_description

    seeds = sorted({job.seed for job in jobs})
    load = " → ".join(" / ".join(f"{x:.2f}" for x in avg) for avg in loads)
    return (
        f"Command: `{shlex.join(['videogn-sweep', *argv[1:]])}`: {len(jobs) // len(seeds)} "
        f"cells × {len(seeds)} seed(s) (seeds {', '.join(map(str, seeds))}), two runs at a "
        f"time, one thread each. Wall time: **{minutes['total']:.1f} min** in all: 2D "
        f"pretraining and inflation {minutes['pretrain']:.1f} min (0 when cached), task "
        f"generation {minutes['task']:.1f} min, the runs {minutes['runs']:.1f} min. Machine: "
        f"{machine_description()}. Load average (1/5/15 min) before → after: {load}. Runs in "
        f"`{sweep_dir}`; task videos in `{task.root}`."
    )


def run_mini_table8(
    *,
    out_dir: Path,
    sweep_dir: Path,
    seeds: list[int],
    overrides: list[str],
    cache_dir: Path | None,
    argv: list[str],
    pretrain_params: dict | None = None,
    task_params: dict | None = None,
) -> int:
    """Pretrain and inflate, generate the task, train and test every (cell, seed), report."""
    from videogn.sweep.mini.flicker_task import ensure_flicker_task
    from videogn.sweep.mini.report import MINI_CELLS, load_annotations, report_mini

    cache_dir = Path(cache_dir or default_cache_dir())
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    loads, clock, minutes = [os.getloadavg()], time.perf_counter(), {}
    stage = pretrain_and_inflate(cache_dir, pretrain_params or {})
    minutes["pretrain"] = (time.perf_counter() - clock) / 60
    task = ensure_flicker_task(cache_dir, **{**TAKE3_TASK, **(task_params or {})})
    minutes["task"] = (time.perf_counter() - clock) / 60 - minutes["pretrain"]
    jobs = make_jobs([cell.experiment for cell in MINI_CELLS], seeds, sweep_dir)
    task_overrides = [f"data.root={task.root}", f"data.frame_cache={task.root / FRAME_CACHE_DIR}"]
    failed = run_jobs(jobs, [*task_overrides, *overrides], study_env(stage))
    minutes["total"] = (time.perf_counter() - clock) / 60
    minutes["runs"] = minutes["total"] - minutes["pretrain"] - minutes["task"]
    loads.append(os.getloadavg())
    notes = _notes(argv, jobs, minutes, tuple(loads), sweep_dir, task)
    out_dir = Path(out_dir)
    text = report_mini(
        [job.run_dir for job in jobs if (job.run_dir / "config.yaml").is_file()],
        out_dir / "mini_table8.md",
        out_dir / "mini_table8.png",
        notes,
        annotations=load_annotations(task.root),
        pretrain_records={norm: entry["record"] for norm, entry in stage.items()},
    )
    text += "\n\n" + figure7_section(jobs, out_dir / "mini_table8_curves.png")
    (out_dir / "mini_table8.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 1 if failed else 0


# Figure 7's cells: BN and GN at 8 and 4 clips per batch, 32x2.
FIGURE7_EXPERIMENTS = tuple(
    f"mini_table8/{norm}_32x2_bs{batch}" for norm in ("bn", "gn") for batch in (8, 4)
)


def figure7_section(jobs: list[Job], out_png: Path) -> str:
    """Draw the error curves of Figure 7's cells with ``videogn-sweep curves``' code; its
    Markdown section ("" when no run has logged yet)."""
    from videogn.sweep.curves import curves_markdown, write_curves

    runs = [job.run_dir for job in jobs if job.experiment in FIGURE7_EXPERIMENTS and job.done]
    if not runs:
        return ""
    summary = write_curves(runs, out_png, axis="epochs", unit="batch")
    return "\n\n".join((
        "## Training curves (the paper's Figure 7)",
        "Top-1 error of BN and GN at 8 and 4 clips per batch (32×2): training (thin, over each "
        "log window) and the 1-clip validation on 64 test videos with the training "
        "augmentation (bold, at every epoch's end); seeds averaged.",
        f"![Figure 7]({out_png.name})",
        curves_markdown(summary, unit="batch"),
    ))  # fmt: skip
