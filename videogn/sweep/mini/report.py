"""The mini Table 8's cells and its report (``docs/mini_table8.md``, the plot, the curves).

The cells are the paper's (take 3): BN and GN at {32x2, 8 per batch}, {32x2, 4} and {64x1 =
twice the frames over the same window, 4}, plus {32x2, 2}; each is an experiment file
under ``conf/experiment/mini_table8/``. :mod:`videogn.sweep.mini.study` runs them (several
seeds each); this module reads the run directories and writes every cell as mean ± std over
seeds with n, the paper's analogue beside it, and the contrasts the paper's claim is about,
paired by seed, with the pre-registered rule for what counts as a difference
(docs/EXPERIMENTS.md). The paper's absolute numbers are for Kinetics and do not transfer.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from videogn.engine.metrics import METRICS_FILE, read_metrics
from videogn.sweep.cells import TABLE8, Cell, column_label
from videogn.sweep.report import NORM_NAMES, CellResult, match_runs, write_report
from videogn.sweep.runs import read_runs


def _mini_cell(cell: Cell) -> Cell:
    """The mini analogue of a Table 8 cell (take 3): the paper's own clip (32x2 or 64x1) and
    batch, at reduced width and space; it keeps the paper's top-1/top-5."""
    name = f"{cell.norm}_{cell.clip}_bs{cell.batch}"
    return replace(cell, experiment=f"mini_table8/{name}")


MINI_TABLE8 = tuple(_mini_cell(cell) for cell in TABLE8)
MINI_BATCH2 = (
    Cell("bn", 32, 2, 2, "mini_table8/bn_32x2_bs2"),
    Cell("gn", 32, 2, 2, "mini_table8/gn_32x2_bs2"),
)
MINI_CELLS = MINI_TABLE8 + MINI_BATCH2

# (name, column of the minuend, column of the subtrahend); columns are (clip, batch).
CONTRASTS = (
    ("batch 8 → 4 (32×2)", ("32x2", 4), ("32x2", 8)),
    ("batch 8 → 2 (32×2)", ("32x2", 2), ("32x2", 8)),
    ("64×1 − 32×2, both at batch 4", ("64x1", 4), ("32x2", 4)),
    ("64×1 at 4 − 32×2 at 8 (what memory allows)", ("64x1", 4), ("32x2", 8)),
)
# Two-sided 95% quantiles of Student's t by degrees of freedom (n - 1 seeds).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 14: 2.145, 19: 2.093, 29: 2.045}  # fmt: skip
# issue 18's goal for GN − BN at 8 clips per batch: the paired 95% interval inside ±5 points
EQUIVALENCE_POINTS = 5.0


def t_975(dof: int) -> float:
    """Student's t, two-sided 95%, at ``dof`` degrees of freedom (the nearest tabled one at or
    below it; 1.96 past 29)."""
    if dof > 29:
        return 1.96
    return T_975[max(k for k in T_975 if k <= dof)]


def interval(deltas: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(deltas)
    half = t_975(len(deltas) - 1) * statistics.stdev(deltas) / len(deltas) ** 0.5
    return mean - half, mean + half


# The pre-registered floor: below this many points a difference does not count (one test
# video is 0.4 points; seeds of one cell differ by about this much).
MIN_DIFFERENCE = 2.0


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def task_breakdown(run_dir: Path, annotations: dict) -> dict[str, float] | None:
    """Video accuracy (%) on the label's halves (direction, steady/flicker) and on the
    flicker half per kind of video: steady, period-2 flicker (invisible to 32x2), period 4."""
    path = run_dir / "video_scores.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    if not len(data["labels"]):
        return None
    predicted, labels = data["scores"].argmax(1), data["labels"]
    flicker_ok = predicted % 2 == labels % 2
    parts = {
        "direction": 100.0 * float(np.mean(predicted // 2 == labels // 2)),
        "flicker": 100.0 * float(np.mean(flicker_ok)),
    }
    periods = np.array([_period(str(p), annotations) for p in data["paths"]])
    for name, period in (("steady", 0), ("period 2", 2), ("period 4", 4)):
        if np.any(periods == period):
            parts[name] = 100.0 * float(np.mean(flicker_ok[periods == period]))
    return parts


# The plateau criterion (take 3, pre-registered): a cell has converged when its training top-1
# error improves by less than this many points over the last 20% of training, measured as the
# mean error of the log windows in the first half of that 20% minus the mean in the second half.
PLATEAU_POINTS = 2.0


def late_improvement(run_dir: Path) -> float | None:
    """Training top-1 error over iterations (80%, 90%] minus (90%, 100%], in points."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    train = [r for r in read_metrics(path, "train") if "top1_err" in r and "step" in r]
    if not train:
        return None
    last = max(r["step"] for r in train)
    early = [r["top1_err"] for r in train if 0.8 * last < r["step"] <= 0.9 * last]
    late = [r["top1_err"] for r in train if 0.9 * last < r["step"]]
    if not early or not late:
        return None
    return statistics.fmean(early) - statistics.fmean(late)


def _plateau(runs) -> str:
    values = [v for v in (late_improvement(r.run_dir) for r in runs) if v is not None]
    if not values:
        return "—"
    mean = statistics.fmean(values)
    return f"{mean:+.1f} ({'plateau' if mean < PLATEAU_POINTS else 'still falling'})"


def _period(path: str, annotations: dict) -> int:
    for rel, annotation in annotations.items():
        if path.endswith(rel):
            return int(annotation.get("flicker_period", -1))
    return -1


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


def verdict(deltas: list[float]) -> str:
    """The pre-registered rule: a difference counts when its 95% t-interval over the paired
    seeds excludes 0 and it is at least MIN_DIFFERENCE points."""
    if len(deltas) < 2:
        return "n < 2: no verdict"
    mean, spread = statistics.fmean(deltas), statistics.stdev(deltas)
    half = t_975(len(deltas) - 1) * spread / len(deltas) ** 0.5
    interval = f"95% CI [{mean - half:+.1f}, {mean + half:+.1f}]"
    if abs(mean) >= MIN_DIFFERENCE and abs(mean) > half:
        return f"**{'gain' if mean > 0 else 'loss'}** ({interval})"
    return f"no difference shown ({interval})"


def contrasts_markdown(results: list[CellResult]) -> str:
    """The comparisons the paper's claim is about: paired by seed, BN beside GN, and the
    paper's difference between the analogue cells."""
    lines = [
        "| contrast (video top-1, points) | BN mini (paired by seed) | BN verdict | BN paper "
        "| GN mini (paired by seed) | GN verdict | GN paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, a, b in CONTRASTS:
        row = [name]
        for norm in ("bn", "gn"):
            deltas, paper = paired_delta(results, norm, a, b)
            mini = "—"
            if deltas:
                mini = f"{statistics.fmean(deltas):+.1f}"
                if len(deltas) > 1:
                    mini += f" ± {statistics.stdev(deltas):.1f}"
                mini += f" (n={len(deltas)})"
            row += [mini, verdict(deltas), "—" if paper is None else f"{paper:+.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def gn_minus_bn_markdown(results: list[CellResult]) -> str:
    """GN − BN in every column, paired by seed (the paper's rows compared cell by cell)."""
    lines = [
        "| cell | GN − BN mini (paired) | verdict | 95% interval inside ±5? | paper |",
        "|---|---|---|---|---|",
    ]
    by_key = {r.cell.key: r for r in results}
    for result in results:
        if result.cell.norm != "gn":
            continue
        bn = by_key.get(("bn", *result.cell.column))
        if bn is None:
            continue
        base = {run.seed: run.top1 for run in bn.done}
        deltas = [run.top1 - base[run.seed] for run in result.done if run.seed in base]
        paper = "—"
        if result.cell.paper_top1 is not None and bn.cell.paper_top1 is not None:
            paper = f"{result.cell.paper_top1 - bn.cell.paper_top1:+.1f}"
        mini = _mean_std(deltas).replace(" (", ", ").replace(")", "") if deltas else "—"
        label = column_label(result.cell.column, "batch")
        inside = "—"
        if len(deltas) >= 2:
            low, high = interval(deltas)
            inside = "yes" if low >= -EQUIVALENCE_POINTS and high <= EQUIVALENCE_POINTS else "no"
        lines.append(f"| {label} | {mini} | {verdict(deltas)} | {inside} | {paper} |")
    return "\n".join(lines)


def cells_markdown(results: list[CellResult], annotations: dict) -> str:
    """One row per cell: mean ± std (n), every seed, the label's halves, the paper's cell."""
    lines = [
        "| norm | cell | top-1 mean ± std (n) | per seed | direction | steady/flicker "
        "| flicker on period-2 videos | train error gain, last 20% | paper's analogue cell "
        "(top-1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        cell = result.cell
        runs = sorted(result.done, key=lambda r: r.seed)
        parts = [p for p in (task_breakdown(r.run_dir, annotations) for r in runs) if p]
        seeds = ", ".join(f"{r.top1:.1f} (s{r.seed})" for r in runs) or result.status()
        halves = [
            _mean_std([p[key] for p in parts if key in p]).split(" (")[0]
            for key in ("direction", "flicker", "period 2")
        ]
        paper = "— (not in the paper)"
        if cell.paper_top1 is not None:
            paper = f"{cell.num_frames}×{cell.frame_interval}, {cell.batch}/GPU: "
            paper += f"{cell.paper_top1:.1f}"
        lines.append(
            f"| {NORM_NAMES[cell.norm]} | {column_label(cell.column, 'batch')} "
            f"| {_mean_std([r.top1 for r in runs])} | {seeds} | "
            + " | ".join(halves)
            + f" | {_plateau(runs)} | {paper} |"
        )
    return "\n".join(lines)


def pretrain_markdown(records: dict[str, dict]) -> str:
    """The 2D stage: what each norm's net reached on held-out crops."""
    lines = [
        "| 2D net | val top-1 (%) | classes | val crops | iterations × batch | final train "
        "loss | train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for norm, record in records.items():
        params = record["params"]
        lines.append(
            f"| {NORM_NAMES[norm]} | {record['val_top1']:.1f} | {record['num_classes']} "
            f"| {record['val_crops']} | {params['iterations']} × {params['batch_size']} "
            f"| {record['final_train_loss']:.2f} | {record['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def machine_description() -> str:
    """``lscpu``'s model, CPU and thread lines, plus Python and torch versions."""
    wanted = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Flags")
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in wanted[:-1]:
                found[key.strip()] = value.strip()
        cpu = "; ".join(f"{k}: {v}" for k, v in found.items())
    except (OSError, subprocess.CalledProcessError):
        cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return (
        f"{cpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def report_mini(
    paths: list[str | Path],
    out_md: str | Path,
    out_png: str | Path,
    run_notes: str = "",
    *,
    annotations: dict | None = None,
    pretrain_records: dict[str, dict] | None = None,
    title: str = "Mini Table 8, take 3",
) -> str:
    """The mini Table 8 from its run directories."""
    records = read_runs(paths)
    results, unmatched = match_runs(MINI_CELLS, records)
    annotations = annotations or {}
    preamble = (
        "The CPU analogue of GN paper Table 8, take 3 (design, pre-registration and analysis "
        "plan: docs/EXPERIMENTS.md). Each cell: mean ± standard deviation over seeds, with n. "
        "The paper's numbers are for Kinetics; only the differences are compared."
    )
    text = write_report(
        results,
        unmatched,
        out_md,
        out_png,
        title=title,
        unit="batch",
        preamble="\n\n".join(p for p in (preamble, run_notes) if p),
        show_paper=False,
    )
    sections = ["## Every cell\n\n" + cells_markdown(results, annotations)]
    sections.append("## The paper's claim, as contrasts\n\n" + contrasts_markdown(results))
    sections.append("## GN − BN per cell\n\n" + gn_minus_bn_markdown(results))
    if pretrain_records:
        sections.append("## 2D pretraining (the ImageNet analogue)\n\n")
        sections[-1] += pretrain_markdown(pretrain_records)
    text = text.replace("## Runs", "\n\n".join(sections) + "\n\n## Runs", 1)
    Path(out_md).write_text(text + "\n", encoding="utf-8")
    return text


def load_annotations(task_root: Path) -> dict:
    path = Path(task_root) / "annotations.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
