"""``videogn-sweep mini-table8``: Table 8's question at a size two CPU cores answer in minutes.

The cells mirror the paper's: BN and GN at {short clip, 8 per batch}, {short, 4} and {long
clip = twice the frames over the same window, 4}, optionally {short, 2}; each is an experiment
file under ``conf/experiment/mini_table8/``. They run as one hydra multirun (optionally over
seeds) on the task of :mod:`videogn.sweep.mini_task`, and the report goes to
``docs/mini_table8.md`` and ``docs/mini_table8.png`` with the command, the machine and the
wall time. Differences are read against the batch-8 column, as trends: the paper's absolute
numbers are for Kinetics and do not transfer.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from videogn.sweep.cells import TABLE8, Cell, column_label
from videogn.sweep.launch import Multirun, run_multirun
from videogn.sweep.mini_task import ensure_mini_task
from videogn.sweep.report import NORM_NAMES, CellResult, match_runs, write_report
from videogn.sweep.runs import read_runs

MINI_TASK = {
    "num_classes": 8,
    "train_videos_per_class": 48,
    "val_videos_per_class": 32,
    "frames_per_video": 24,
    "frame_size": 48,
    "event_gap": 6,
    "event_length": 2,
}


def _mini_cell(cell: Cell) -> Cell:
    """The mini analogue of a Table 8 cell: a quarter of the frames at the same interval
    (32x2 -> 8x2, 64x1 -> 16x1), the same batch; it keeps the paper's top-1/top-5, which the
    report uses for trends only."""
    frames = cell.num_frames // 4
    name = f"{cell.norm}_{frames}x{cell.frame_interval}_bs{cell.batch}"
    return replace(cell, num_frames=frames, experiment=f"mini_table8/{name}")


MINI_TABLE8 = tuple(_mini_cell(cell) for cell in TABLE8)
MINI_BATCH2 = (
    Cell("bn", 8, 2, 2, "mini_table8/bn_8x2_bs2"),
    Cell("gn", 8, 2, 2, "mini_table8/gn_8x2_bs2"),
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEOGN_CACHE") or "~/.cache/videogn").expanduser()


def direction_and_order(run_dir: Path) -> tuple[float, float] | None:
    """Video accuracy (%) on the two halves of the label: motion direction and flash order."""
    path = run_dir / "video_scores.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    if not len(data["labels"]):
        return None
    predicted, labels = data["scores"].argmax(1), data["labels"]
    direction = 100.0 * float(np.mean(predicted // 2 == labels // 2))
    order = 100.0 * float(np.mean(predicted % 2 == labels % 2))
    return direction, order


def _mean(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def trend_markdown(results: list[CellResult]) -> str:
    """Each cell's change against its norm's batch-8 cell, beside the paper's change."""
    reference = {r.cell.norm: r for r in results if r.cell.batch == 8}
    lines = [
        "| norm | cell | Δ top-1 vs 8/batch (mini) | paper's Δ (analogue) "
        "| direction acc. | order acc. | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        cell, ref = result.cell, reference.get(result.cell.norm)
        parts = [direction_and_order(run.run_dir) for run in result.done]
        parts = [p for p in parts if p]
        delta = paper = "—"
        if ref and ref.done and result.done:
            base = {run.seed: run.top1 for run in ref.done}
            paired = [run.top1 - base[run.seed] for run in result.done if run.seed in base]
            delta = _mean(paired) if cell.batch != 8 else "0 (reference)"
        if ref and cell.paper_top1 is not None and cell.batch != 8:
            paper = f"{cell.paper_top1 - ref.cell.paper_top1:+.1f}"
        lines.append(
            f"| {NORM_NAMES[cell.norm]} | {column_label(cell.column, 'batch')} | {delta} | {paper} "
            f"| {_mean([p[0] for p in parts])} | {_mean([p[1] for p in parts])} "
            f"| {len(result.done)} |"
        )
    return "\n".join(lines)


# (name, cell column of the minuend, cell column of the subtrahend); columns are (clip, batch).
CONTRASTS = (
    ("batch 8 → 4 (short clip)", ("8x2", 4), ("8x2", 8)),
    ("batch 8 → 2 (short clip)", ("8x2", 2), ("8x2", 8)),
    ("long − short clip, both at batch 4", ("16x1", 4), ("8x2", 4)),
    ("long at 4 − short at 8 (what memory allows)", ("16x1", 4), ("8x2", 8)),
)


def paired_delta(results: list[CellResult], norm: str, a, b) -> tuple[list[float], float | None]:
    """top-1 of column ``a`` minus column ``b`` for one norm, per seed present in both; and the
    paper's difference between the analogue cells (None where the paper has no such cell)."""
    by_column = {r.cell.column: r for r in results if r.cell.norm == norm}
    if a not in by_column or b not in by_column:
        return [], None
    ra, rb = by_column[a], by_column[b]
    base = {run.seed: run.top1 for run in rb.done}
    deltas = [run.top1 - base[run.seed] for run in ra.done if run.seed in base]
    paper = None
    if ra.cell.paper_top1 is not None and rb.cell.paper_top1 is not None:
        paper = ra.cell.paper_top1 - rb.cell.paper_top1
    return deltas, paper


def contrasts_markdown(results: list[CellResult]) -> str:
    """The comparisons the paper's claim is about, BN beside GN, mini beside paper."""
    lines = [
        "| contrast (video top-1, points) | BN mini | BN paper | GN mini | GN paper |",
        "|---|---|---|---|---|",
    ]
    for name, a, b in CONTRASTS:
        row = [name]
        for norm in ("bn", "gn"):
            deltas, paper = paired_delta(results, norm, a, b)
            mini = "—"
            if deltas:
                mini = f"{statistics.fmean(deltas):+.1f}"
                if len(deltas) > 1:
                    mini += f" ± {statistics.stdev(deltas):.1f} (n={len(deltas)})"
            row += [mini, "—" if paper is None else f"{paper:+.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{model}, {cores} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def report_mini(
    paths: list[str | Path], out_md: str | Path, out_png: str | Path, run_notes: str = ""
) -> str:
    """The mini Table 8 from its run directories (batch-2 cells included when present)."""
    records = read_runs(paths)
    cells = MINI_TABLE8 + tuple(c for c in MINI_BATCH2 if any(r.key == c.key for r in records))
    results, unmatched = match_runs(cells, records)
    preamble = "\n\n".join(
        part
        for part in (
            "The CPU analogue of GN paper Table 8 (see docs/EXPERIMENTS.md for the design). "
            "Mean over seeds where there are several (± the standard deviation across seeds); "
            "the paper's numbers are not comparable in absolute terms, only the trends are.",
            run_notes,
        )
        if part
    )
    text = write_report(
        results,
        unmatched,
        out_md,
        out_png,
        title="Mini Table 8",
        unit="batch",
        preamble=preamble,
        show_paper=False,
    )
    trends = (
        "## The paper's claim, as contrasts\n\n"
        + contrasts_markdown(results)
        + "\n\n## Every cell against the batch-8 cell\n\n"
        + trend_markdown(results)
    )
    text = text.replace("## Runs", trends + "\n\n## Runs", 1)
    Path(out_md).write_text(text + "\n", encoding="utf-8")
    return text


def run_mini_table8(
    *,
    out_dir: Path,
    sweep_dir: Path,
    seeds: list[int],
    batch2: bool,
    overrides: list[str],
    task_changes: dict | None = None,
    cache_dir: Path | None,
    argv: list[str],
) -> int:
    """Generate the task, train and test every cell (one multirun), write the report."""
    start = time.perf_counter()
    load_before = os.getloadavg()
    task_params = {**MINI_TASK, **(task_changes or {})}
    task = ensure_mini_task(cache_dir or default_cache_dir(), **task_params)
    cells = MINI_TABLE8 + (MINI_BATCH2 if batch2 else ())
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    multirun = Multirun(
        experiments=[c.experiment for c in cells],
        sweep_dir=sweep_dir,
        overrides=[f"data.root={task.root}", *overrides],
        seeds=seeds,
    )
    status = run_multirun(multirun)
    minutes = (time.perf_counter() - start) / 60
    load_after = os.getloadavg()
    notes = (
        f"Command: `{shlex.join(['videogn-sweep', *argv[1:]])}` — {len(cells)} cells × "
        f"{len(seeds)} seed(s) in **{minutes:.1f} min** wall time (task generation included) "
        f"on {machine_description()}. Load average (1/5/15 min) before: "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after: "
        f"{' / '.join(f'{x:.2f}' for x in load_after)}. Runs in `{sweep_dir}`; task videos in "
        f"`{task.root}`. Task: "
        + ", ".join(f"{key}={value}" for key, value in task_params.items())
        + "."
    )
    out_dir = Path(out_dir)
    text = report_mini([sweep_dir], out_dir / "mini_table8.md", out_dir / "mini_table8.png", notes)
    print(text)
    return status
