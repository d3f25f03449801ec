"""Table 8 from run directories: a Markdown table with the paper's numbers and a plot.

Every cell shows the measured video-level top-1 / top-5 (mean over seeds when there are
several runs), the paper's numbers and the difference. A cell without a run says "missing";
a run that failed or has not been tested says so; neither is ever drawn as a zero.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from videogn.sweep.cells import Cell, column_label, columns, norms
from videogn.sweep.runs import RunRecord
from videogn.utils.figures import pyplot, save_figure

NORM_NAMES = {"bn": "BN", "gn": "GN"}
NORM_COLOURS = {"bn": "tab:blue", "gn": "tab:orange"}


@dataclass
class CellResult:
    """The runs of one cell and their summary."""

    cell: Cell
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def done(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "done"]

    def mean(self, metric: str) -> float | None:
        values = [getattr(r, metric) for r in self.done]
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = [getattr(r, metric) for r in self.done]
        return statistics.stdev(values) if len(values) > 1 else None

    def status(self) -> str:
        """Return "done", or why there is no number: missing, failed (reason), incomplete (...)."""
        if self.done:
            return "done"
        if not self.runs:
            return "missing"
        run = self.runs[-1]
        return f"{run.status} ({run.reason})" if run.reason else run.status


def match_runs(cells: tuple[Cell, ...], records: list[RunRecord]):
    """Assign runs to cells by (norm, clip, batch). Returns (cell results, unmatched runs)."""
    results = {cell.key: CellResult(cell) for cell in cells}
    unmatched = []
    for record in records:
        if record.key in results:
            results[record.key].runs.append(record)
        else:
            unmatched.append(record)
    return [results[cell.key] for cell in cells], unmatched


def _signed(value: float) -> str:
    return f"{value:+.1f}".replace("-", "−")


def format_cell(result: CellResult, show_paper: bool = True, note: str = "") -> str:
    status = result.status()
    note = f"<br>{note}" if note else ""
    if status != "done":
        return f"*{status}*{note}"
    top1, top5 = result.mean("top1"), result.mean("top5")
    text = f"**{top1:.1f}** / {top5:.1f}"
    if len(result.done) > 1:
        text += f" (±{result.std('top1'):.1f}, n={len(result.done)})"
    failed = len(result.runs) - len(result.done)
    if failed:
        text += f" [{failed} run(s) without result]"
    cell = result.cell
    if show_paper and cell.paper_top1 is not None:
        d1, d5 = top1 - cell.paper_top1, top5 - cell.paper_top5
        text += (
            f"<br>paper {cell.paper_top1:.1f} / {cell.paper_top5:.1f}, "
            f"Δ {_signed(d1)} / {_signed(d5)}"
        )
    return text + note


def _header(column: tuple[str, int], cells: tuple[Cell, ...], unit: str, show_paper: bool) -> str:
    label = column_label(column, unit)
    beyond = all(c.paper_top1 is None for c in cells if c.column == column)
    return f"{label} (*beyond the paper*)" if show_paper and beyond else label


def table_markdown(
    results: list[CellResult],
    unit: str = "GPU",
    show_paper: bool = True,
    cell_notes: dict | None = None,
) -> str:
    """The table: norms as rows, (clip, batch) as columns, top-1 / top-5 in every cell;
    ``cell_notes`` (cell key -> text) adds a line to a cell. Columns without the paper's
    numbers are marked as beyond the paper."""
    cells = tuple(r.cell for r in results)
    by_key = {r.cell.key: r for r in results}
    cols = columns(cells)
    notes = cell_notes or {}
    lines = [
        "| norm | " + " | ".join(_header(c, cells, unit, show_paper) for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for norm in norms(cells):
        row = []
        for clip, batch in cols:
            result = by_key.get((norm, clip, batch))
            note = notes.get((norm, clip, batch), "")
            row.append(format_cell(result, show_paper, note) if result else "")
        lines.append(f"| {NORM_NAMES.get(norm, norm)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def runs_markdown(results: list[CellResult], unmatched: list[RunRecord]) -> str:
    """One line per run directory: where it is, its status, its numbers."""
    lines = [
        "| cell | seed | status | top-1 | top-5 | videos | iterations | batch (total, procs) "
        "| init | run dir |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    entries = [(r.cell.key, run) for r in results for run in r.runs]
    entries += [(run.key, run) for run in unmatched]
    for (norm, clip, batch), run in entries:
        numbers = (f"{run.top1:.1f}", f"{run.top5:.1f}") if run.status == "done" else ("—", "—")
        videos = (
            f"{run.videos_evaluated}/{run.videos_listed}" if run.videos_listed is not None else "—"
        )
        total = f"{run.total_batch}, {run.world_size}" if run.total_batch else "—"
        status = run.status + (f": {run.reason}" if run.reason else "")
        init = Path(run.pretrained).name if run.pretrained else "scratch"
        cell = f"{NORM_NAMES.get(norm, norm)} {clip} {batch}/proc"
        lines.append(
            f"| {cell} | {run.seed} | {status} | {numbers[0]} | {numbers[1]} | {videos} "
            f"| {run.iterations if run.iterations is not None else '—'} | {batch} ({total}) "
            f"| {init} | `{run.run_dir}` |"
        )
    for result in results:
        if not result.runs:
            norm, clip, batch = result.cell.key
            lines.append(
                f"| {NORM_NAMES.get(norm, norm)} {clip} {batch}/proc | — | missing | — | — | — "
                "| — | — | — | — |"
            )
    return "\n".join(lines)


def _plot_norm(ax, norm: str, cols, by_key: dict) -> None:
    """One norm's measured top-1 (with seed std) and the paper's; no-result cells annotated."""
    colour = NORM_COLOURS.get(norm)
    xs, ys, errs, paper_x, paper_y = [], [], [], [], []
    for x, (clip, batch) in enumerate(cols):
        result = by_key.get((norm, clip, batch))
        if result is None:
            continue
        if result.cell.paper_top1 is not None:
            paper_x.append(x)
            paper_y.append(result.cell.paper_top1)
        if result.status() == "done":
            xs.append(x)
            ys.append(result.mean("top1"))
            errs.append(result.std("top1") or 0.0)
        else:
            ax.annotate(
                f"{NORM_NAMES.get(norm, norm)}: {result.status().split(' (')[0]}",
                (x, 0.02 if norm == "bn" else 0.08),
                xycoords=("data", "axes fraction"),
                ha="center",
                color=colour,
                fontsize=8,
            )
    label = NORM_NAMES.get(norm, norm)
    if xs:
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colour, label=label)
    if paper_x:
        ax.plot(paper_x, paper_y, "--", marker="s", mfc="none", color=colour, alpha=0.6,
                label=f"{label} (paper)")  # fmt: skip


def plot_results(
    results: list[CellResult], path: str | Path, title: str, unit: str = "GPU"
) -> Path:
    """top-1 against (clip, batch) for each norm; the paper's values dashed; no-result cells
    marked on the axis instead of being drawn."""
    plt = pyplot()

    cells = tuple(r.cell for r in results)
    cols = columns(cells)
    by_key = {r.cell.key: r for r in results}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for norm in norms(cells):
        _plot_norm(ax, norm, cols, by_key)
    ax.set_xticks(range(len(cols)), [column_label(c, unit) for c in cols])
    ax.set_xlim(-0.5, len(cols) - 0.5)
    ax.set_ylabel("video top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(
    results: list[CellResult],
    unmatched: list[RunRecord],
    out_md: str | Path,
    out_png: str | Path,
    *,
    title: str = "Table 8",
    unit: str = "GPU",
    preamble: str = "",
    show_paper: bool = True,
    appendix: str = "",
    cell_notes: dict | None = None,
) -> str:
    """Write the Markdown report and the plot (``appendix`` goes last, ``cell_notes`` go into
    the table's cells); returns the Markdown."""
    out_md, out_png = Path(out_md), Path(out_png)
    plot_results(results, out_png, title, unit)
    text = "\n\n".join(
        part
        for part in (
            f"# {title}",
            preamble,
            "Video-level top-1 / top-5 (%), mean of softmax scores over the test clips.",
            table_markdown(results, unit, show_paper, cell_notes),
            f"![{title}]({out_png.name})",
            "## Runs",
            runs_markdown(results, unmatched),
            appendix,
        )
        if part
    )
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text + "\n", encoding="utf-8")
    return text
