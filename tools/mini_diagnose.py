"""Exploratory runs of the mini Table 8 (take 3's diagnosis; docs/EXPERIMENTS.md says which).

The study's own stages (2D pretraining, ``videogn-inflate``, the task, one ``videogn-train``
per run, two at a time) for a chosen set of cells, seeds and GN group counts, so a diagnosis
is a command, not a notebook. Pilot and diagnostic seeds must not be the confirmatory ones.

    # the take-3 structure, one pilot seed per norm
    python tools/mini_diagnose.py --cells bn_32x2_bs8,gn_32x2_bs8 --seeds 100
    # the group count: 2D nets pretrained with G groups (0 = one channel per group), inflated
    # at the same G, fine-tuned in the GN cell
    python tools/mini_diagnose.py --cells gn_32x2_bs8 --groups 1,2,4,8,0 --seeds 100

Prints one line per run: cell, G, seed, video top-1, direction and steady/flicker accuracy,
the final training error and the minutes it took.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from videogn.engine.metrics import METRICS_FILE, read_metrics
from videogn.sweep.mini.flicker_task import ensure_flicker_task
from videogn.sweep.mini.pretrain2d import ensure_pretrained_2d
from videogn.sweep.mini.report import load_annotations, task_breakdown
from videogn.sweep.mini.study import (
    FRAME_CACHE_DIR,
    PRETRAINED_ENV,
    TAKE3_TASK,
    Job,
    default_cache_dir,
    inflate,
    run_jobs,
)

ONE_CHANNEL_PER_GROUP = 4096  # more groups than any layer has channels: min(G, C) = C


def pretrain_all(cache_dir: Path, nets: list[dict]) -> None:
    """Train the 2D nets that are not cached yet, two processes (one thread each) at a time."""
    todo = [json.dumps(params) for params in nets]
    running: list[subprocess.Popen] = []
    while todo or running:
        while todo and len(running) < 2:
            command = [sys.executable, "-m", "videogn.sweep.mini.pretrain2d", str(cache_dir)]
            running.append(subprocess.Popen([*command, todo.pop(0)]))
        running[0].wait()
        for process in [p for p in running if p.poll() is not None]:
            if process.returncode != 0:
                raise RuntimeError(f"2D pretraining failed: {shlex.join(process.args)}")
        running = [p for p in running if p.poll() is None]


def net_params(norm: str, groups: int) -> dict:
    return {"norm": norm} if norm == "bn" else {"norm": norm, "num_groups": groups}


def pretrained_for(cache_dir: Path, norm: str, groups: int) -> Path:
    """The inflated I3D checkpoint of a 2D net pretrained with ``groups`` (GN) or BN."""
    net = ensure_pretrained_2d(cache_dir, **net_params(norm, groups))
    print(f"2D {norm} G={groups}: held-out top-1 {net.record['val_top1']:.1f}%", flush=True)
    return inflate(net, norm, net.record["num_classes"], num_groups=groups)


STAGES = ("stem", "res2", "res3", "res4", "res5")


def feature_health(run_dir: Path, num_clips: int = 32) -> str:
    """Per stage, on the run's own training clips (train mode, as the step sees them): the
    share of output channels that are zero for every clip (dead after the ReLU), and for res5
    the share of positive outputs, which is what the classifier sees."""
    import torch

    from videogn.engine.run import restore_run

    run = restore_run(run_dir, ["device=cpu"])
    records = run.spec.data.train_records()[:num_clips]
    dataset = run.spec.data.train_dataset(records, run.spec.samplers.train, seed=0)
    clips = torch.stack([dataset[i]["clip"] for i in range(len(records))]).float()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1, 1) for v in run.spec.data.normalization)
    if dataset[0]["clip"].dtype == torch.uint8:
        clips = (clips / 255.0 - mean) / std
    outputs = {}
    model = run.model.train()
    for name in STAGES:
        getattr(model, name).register_forward_hook(
            lambda m, i, o, n=name: outputs.__setitem__(n, o)
        )
    with torch.no_grad():
        model(clips)
    dead = [float((outputs[n].amax((0, 2, 3, 4)) <= 0).float().mean()) for n in STAGES]
    active = float((outputs["res5"] > 0).float().mean())
    return (
        "dead channels "
        + "/".join(f"{100 * d:.0f}" for d in dead)
        + f"  res5>0 {100 * active:.0f}%"
    )


def summarize(run_dir: Path, annotations: dict) -> str:
    results = json.loads((run_dir / "results.json").read_text())
    parts = task_breakdown(run_dir, annotations) or {}
    train = [r for r in read_metrics(run_dir / METRICS_FILE, "train") if "top1" in r]
    tail = train[-max(1, len(train) // 10) :]
    err = 100 - sum(r["top1"] for r in tail) / len(tail)
    return (
        f"top-1 {results['video_top1']:.1f}  direction {parts.get('direction', 0):.1f}  "
        f"flicker {parts.get('flicker', 0):.1f}  final train err {err:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", required=True, help="e.g. bn_32x2_bs8,gn_32x2_bs8")
    parser.add_argument("--seeds", default="100")
    parser.add_argument("--groups", default="4", help="GN group counts; 0 = one channel each")
    parser.add_argument("--out", type=Path, default=Path("multirun/mini_diagnose"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--task", default="{}", type=json.loads, help='e.g. {"disk_radius": [10, 14]}'
    )
    parser.add_argument("overrides", nargs="*", help="hydra overrides for every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cache_dir = Path(args.cache_dir or default_cache_dir())
    task = ensure_flicker_task(cache_dir, **{**TAKE3_TASK, **args.task})
    annotations = load_annotations(task.root)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = [f"data.root={task.root}", f"data.frame_cache={task.root / FRAME_CACHE_DIR}"]
    # the run directories name what differs, so runs of other settings are never reused
    variant = hashlib.sha1(json.dumps([args.overrides, args.task]).encode()).hexdigest()[:6]
    cells = args.cells.split(",")
    group_counts = [int(x) or ONE_CHANNEL_PER_GROUP for x in args.groups.split(",")]
    norms = {cell.split("_")[0] for cell in cells}
    nets = [net_params("bn", 0)] if "bn" in norms else []
    nets += [net_params("gn", g) for g in group_counts] if "gn" in norms else []
    pretrain_all(cache_dir, nets)
    jobs = []
    for cell in cells:
        norm = cell.split("_")[0]
        for g in group_counts[:1] if norm == "bn" else group_counts:
            weights = str(pretrained_for(cache_dir, norm, g))
            extra = () if norm == "bn" else (f"norm.num_groups={g}",)
            tag = cell if norm == "bn" else f"{cell}_G{g}"
            jobs += [
                Job(
                    f"mini_table8/{cell}",
                    seed,
                    args.out.resolve() / f"{tag}_{variant}_seed{seed}",
                    extra_overrides=extra,
                    extra_env=((PRETRAINED_ENV[norm], weights),),
                )
                for seed in seeds
            ]
    start = time.perf_counter()
    run_jobs(jobs, [*overrides, *args.overrides], dict(os.environ))
    for job in jobs:
        line = "FAILED"
        if job.done:
            line = f"{summarize(job.run_dir, annotations)}  {feature_health(job.run_dir)}"
        print(f"{job.run_dir.name:34s} {line}")
    print(f"{len(jobs)} runs in {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
