"""The GN paper's Figure 7 from run directories: training and validation error curves.

Figure 7 plots ResNet-50 I3D's top-1 error on Kinetics against training time, BN in one panel
and GN in the other, at 8 and 4 clips per GPU: the training error (thin) and the monitored
1-clip validation error (bold). Here every run directory gives its ``metrics.jsonl``: the
``train`` rows (top-1 error over each log window) and the ``val`` rows that
``trainer.val_period`` (or ``val_period_epochs``) writes (:mod:`videogn.engine.validation`).
Runs of one setting (norm, clip, clips per GPU) with different seeds are averaged at the
steps they share. The x axis is epochs (the runs at 4 clips per GPU take twice the iterations
of those at 8 for the same epochs) or iterations.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from videogn.engine.metrics import METRICS_FILE, read_metrics
from videogn.sweep.report import NORM_NAMES
from videogn.sweep.runs import RunRecord, read_runs
from videogn.utils.figures import pyplot, save_figure

X_AXES = ("epochs", "iterations")
# The engine's log line: "..., 400 iterations (16 per epoch), ..."
PER_EPOCH_LINE = re.compile(r"(\d+) iterations \((\d+) per epoch\)")
BATCH_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")


@dataclass
class Curve:
    """Error (%) at steps (iterations), sorted by step."""

    steps: list[int] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)


@dataclass
class RunCurves:
    """One run's training and validation curves."""

    run: RunRecord
    train: Curve
    val: Curve
    iterations_per_epoch: float | None


def _curve(rows: list[dict], error_of) -> Curve:
    """A curve from metric rows; a step logged twice (redone after a resume) keeps its last."""
    by_step = {int(row["step"]): float(error_of(row)) for row in rows}
    steps = sorted(by_step)
    return Curve(steps, [by_step[s] for s in steps])


def _train_error(row: dict) -> float:
    # Runs from before top1_err was logged have top1 (accuracy, %) only.
    return row["top1_err"] if "top1_err" in row else 100.0 - row["top1"]


def _iterations_per_epoch(run_dir: Path, val_rows: list[dict]) -> float | None:
    for row in val_rows:
        if row.get("epochs"):
            return row["step"] / row["epochs"]
    for log in sorted(run_dir.glob("*.log")):
        match = PER_EPOCH_LINE.search(log.read_text(encoding="utf-8", errors="replace"))
        if match:
            return float(match.group(2))
    return None


def load_run_curves(run: RunRecord) -> RunCurves:
    """The curves in a run directory's ``metrics.jsonl``."""
    path = run.run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run.run_dir} has no {METRICS_FILE}: it never logged a step")
    rows = read_metrics(path)
    train = [r for r in rows if r.get("phase") == "train"]
    val = [r for r in rows if r.get("phase") == "val"]
    return RunCurves(
        run,
        _curve(train, _train_error),
        _curve(val, lambda row: row["top1_err"]),
        _iterations_per_epoch(run.run_dir, val),
    )


def average_curves(curves: list[Curve]) -> Curve:
    """The mean over runs (seeds) at the steps every run logged; other steps are dropped."""
    if not curves:
        return Curve()
    shared = set(curves[0].steps).intersection(*(c.steps for c in curves[1:]))
    lookup = [dict(zip(c.steps, c.errors, strict=True)) for c in curves]
    steps = sorted(shared)
    return Curve(steps, [statistics.fmean(table[s] for table in lookup) for s in steps])


@dataclass
class Setting:
    """The averaged curves of one (norm, clip, clips per GPU), over its runs (seeds)."""

    norm: str
    clip: str
    batch: int
    runs: list[RunCurves]

    @property
    def train(self) -> Curve:
        return average_curves([r.train for r in self.runs])

    @property
    def val(self) -> Curve:
        return average_curves([r.val for r in self.runs if r.val.steps])

    def x(self, steps: list[int], axis: str) -> list[float]:
        if axis == "iterations":
            return [float(s) for s in steps]
        per_epoch = self.runs[0].iterations_per_epoch
        return [s / per_epoch for s in steps]


def group_settings(runs: list[RunCurves]) -> list[Setting]:
    """Runs grouped by (norm, clip, batch), in order of norm then batch (largest first)."""
    groups: dict[tuple[str, str, int], list[RunCurves]] = {}
    for run in runs:
        groups.setdefault(run.run.key, []).append(run)
    order = sorted(groups, key=lambda k: (k[0], k[1], -k[2]))
    return [Setting(*key, groups[key]) for key in order]


def check_x_axis(settings: list[Setting], axis: str) -> None:
    if axis not in X_AXES:
        raise ValueError(f"unknown x axis {axis!r}; choose one of {', '.join(X_AXES)}")
    if axis != "epochs":
        return
    for setting in settings:
        for run in setting.runs:
            if run.iterations_per_epoch is None:
                raise ValueError(
                    f"{run.run.run_dir}: iterations per epoch unknown (no val row with "
                    "'epochs' and no engine log); use --x iterations"
                )


def _label(setting: Setting, several_clips: bool, unit: str) -> str:
    label = f"{setting.batch} clips/{unit}"
    if several_clips:
        label += f", {setting.clip.replace('x', '×')}"
    if len(setting.runs) > 1:
        label += f" ({len(setting.runs)} seeds)"
    return label


def plot_curves(
    settings: list[Setting], path: str | Path, *, axis: str = "epochs", unit: str = "GPU"
) -> Path:
    """Figure 7's layout: one panel per norm; per setting one colour, the training error
    thin and the validation error bold."""
    plt = pyplot()

    check_x_axis(settings, axis)
    panels = list(dict.fromkeys(s.norm for s in settings))
    columns = sorted({(s.clip, s.batch) for s in settings}, key=lambda c: (-c[1], c[0]))
    colours = {c: BATCH_COLOURS[i % len(BATCH_COLOURS)] for i, c in enumerate(columns)}
    several_clips = len({s.clip for s in settings}) > 1
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.2), sharey=True, squeeze=False
    )
    for ax, norm in zip(axes[0], panels, strict=True):
        for setting in (s for s in settings if s.norm == norm):
            colour, label = (
                colours[(setting.clip, setting.batch)],
                _label(setting, several_clips, unit),
            )
            train, val = setting.train, setting.val
            ax.plot(setting.x(train.steps, axis), train.errors, color=colour, lw=0.8,
                    alpha=0.8, label=f"{label}, train")  # fmt: skip
            if val.steps:
                ax.plot(setting.x(val.steps, axis), val.errors, color=colour, lw=2.6,
                        marker="o", ms=3, label=f"{label}, val")  # fmt: skip
        ax.set_title(NORM_NAMES.get(norm, norm))
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("top-1 error (%)")
    fig.suptitle("Training (thin) and 1-clip validation (bold) error", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_curves(
    paths: list[str | Path], out: str | Path, *, axis: str | None = "epochs", unit: str = "GPU"
) -> list[dict]:
    """``videogn-sweep curves``: draw the runs under ``paths`` into ``out`` (a PNG).

    Runs without training rows (failed before logging) are left out. ``axis`` None picks
    epochs when every run knows its iterations per epoch, else iterations.

    Returns one summary per setting: its runs, and the last train and val errors plotted.
    """
    records = [r for r in read_runs(paths) if (r.run_dir / METRICS_FILE).is_file()]
    runs = [c for c in map(load_run_curves, records) if c.train.steps]
    if not runs:
        raise ValueError(f"no training rows in the metrics.jsonl of {', '.join(map(str, paths))}")
    settings = group_settings(runs)
    if axis is None:  # epochs where every run says how long its epoch is
        axis = "epochs" if all(r.iterations_per_epoch for r in runs) else "iterations"
    plot_curves(settings, out, axis=axis, unit=unit)
    summary = []
    for s in settings:
        train, val = s.train, s.val
        summary.append({
            "norm": s.norm, "clip": s.clip, "batch": s.batch, "runs": len(s.runs),
            "last_step": train.steps[-1] if train.steps else None,
            "train_top1_err": train.errors[-1] if train.errors else None,
            "val_points": len(val.steps),
            "val_top1_err": val.errors[-1] if val.errors else None,
        })  # fmt: skip
    return summary


def curves_markdown(summary: list[dict], unit: str = "GPU") -> str:
    """A short table of the settings drawn: the last training and validation errors."""
    lines = [
        f"| norm | clip | clips/{unit} | runs | last step | train top-1 err | "
        "val top-1 err (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        train = "—" if s["train_top1_err"] is None else f"{s['train_top1_err']:.1f}"
        val = "—" if s["val_top1_err"] is None else f"{s['val_top1_err']:.1f} ({s['val_points']})"
        lines.append(
            f"| {NORM_NAMES.get(s['norm'], s['norm'])} | {s['clip']} | {s['batch']} | "
            f"{s['runs']} | {s['last_step']} | {train} | {val} |"
        )
    return "\n".join(lines)
