"""``videogn-plan``: memory per clip, fixed memory and the largest per-device batch per budget.

By default it prints the six cells of Table 8 of the GN paper (BN and GN; 32x2 clips at
batch 8 and 4, 64x1 clips at batch 4) at fp32 and bf16 for budgets of 16 to 141 GiB::

    videogn-plan                                  # the Table 8 cells
    videogn-plan --cell gn:64x1:4 --dtype bf16 --channels-last --markdown
    videogn-plan --target-batch 64 --world-size 8 --budget-gb 16   # plus a plan per row
    videogn-plan --cell gn:64x1:8 --checkpointing none res2 all      # checkpointing rows
    videogn-plan frontier --budget-gb 80 --world-size 8 --plot frontier.png
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import textwrap
from dataclasses import dataclass

from videogn.cli.plan_options import (
    AUTOCAST_NOTES,
    add_model_options,
    checkpointing_arg,
    format_table,
    model_kwargs,
)
from videogn.memory.checkpointing import recompute_overhead
from videogn.memory.estimate import (
    GIB,
    MemoryEstimate,
    autocast_dtype,
    build_meta_model,
    estimate_memory,
)
from videogn.memory.plan import batch_statistics, plan_from_estimate
from videogn.models.i3d import CHECKPOINT_STAGES

DEFAULT_BUDGETS_GB = (16, 32, 40, 80, 141)
_CELL_PATTERN = re.compile(
    r"^(?P<norm>[a-z_]+):(?P<frames>\d+)(x(?P<interval>\d+))?(:(?P<batch>\d+))?$"
)


@dataclass(frozen=True)
class Cell:
    """A row of the table: a norm and a clip length, with the paper's batch if any."""

    norm: str
    num_frames: int
    frame_interval: int | None = None
    paper_batch: int | None = None

    @property
    def label(self) -> str:
        clip = (
            f"{self.num_frames}x{self.frame_interval}"
            if self.frame_interval
            else f"{self.num_frames}"
        )
        batch = f" bs{self.paper_batch}" if self.paper_batch else ""
        return f"{self.norm.upper()} {clip}{batch}"


TABLE8_CELLS = tuple(
    Cell(norm, frames, interval, batch)
    for norm in ("bn", "gn")
    for frames, interval, batch in ((32, 2, 8), (32, 2, 4), (64, 1, 4))
)


def parse_cell(spec: str) -> Cell:
    """Parse "NORM:FRAMES[xINTERVAL][:BATCH]", e.g. "gn:64x1:4" or "bn:32"."""
    match = _CELL_PATTERN.match(spec)
    if not match:
        raise argparse.ArgumentTypeError(
            f"cell '{spec}': expected NORM:FRAMES[xINTERVAL][:BATCH], e.g. gn:64x1:4"
        )
    to_int = lambda key: int(match[key]) if match[key] else None
    return Cell(match["norm"], int(match["frames"]), to_int("interval"), to_int("batch"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogn-plan",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--cell",
        type=parse_cell,
        action="append",
        help="NORM:FRAMES[xINTERVAL][:BATCH] (repeatable; default: the six Table 8 cells)",
    )
    add_model_options(parser)
    add(
        "--checkpointing",
        type=checkpointing_arg,
        nargs="+",
        default=[()],
        help="activation checkpointing settings, one row each: none, all, or stages such as "
        "res2,res3 (default none)",
    )
    add(
        "--budgets-gb",
        type=float,
        nargs="+",
        default=list(DEFAULT_BUDGETS_GB),
        help="per-device budgets in GiB (default 16 32 40 80 141)",
    )
    add("--target-batch", type=int, help="also plan this total batch per row")
    add("--world-size", type=int, default=1, help="devices, for --target-batch")
    add("--budget-gb", type=float, default=16.0, help="budget of the --target-batch plans")
    add("--markdown", action="store_true", help="print a Markdown table")
    return parser


def row_autocast(dtype: str, policy: str) -> str:
    """The autocast a row assumes: "-" in fp32, else the policy whose op lists it follows."""
    return "-" if autocast_dtype(dtype) is None else f"{policy} policy"


def checkpointing_label(stages: tuple[str, ...]) -> str:
    if not stages:
        return "none"
    return "all" if stages == CHECKPOINT_STAGES else ",".join(stages)


def _row(
    cell: Cell, setting: tuple, estimates: dict, overheads: dict, args: argparse.Namespace
) -> list[str]:
    dtype, stages = setting
    estimate = estimates[cell.norm, cell.num_frames, dtype, stages]
    needed = f"{estimate.total_bytes(cell.paper_batch) / GIB:.2f}" if cell.paper_batch else "-"
    fits = [str(estimate.largest_batch(int(gb * GIB))) for gb in args.budgets_gb]
    overhead = overheads[cell.norm, cell.num_frames, stages]
    return [
        cell.label,
        dtype,
        row_autocast(dtype, args.autocast_policy),
        checkpointing_label(stages),
        f"+{overhead:.0%}",
        f"{estimate.bytes_per_clip / GIB:.3f}",
        f"{estimate.fixed_bytes / GIB:.2f}",
        needed,
        *fits,
    ]


def _footer(estimate: MemoryEstimate, crop: int) -> str:
    return (
        f"Clips are T x {crop} x {crop}. Per clip: activation peak of forward + backward. Fixed: "
        f"parameters, gradients, optimizer state, buffers, autocast weight copies and a "
        f"{estimate.workspace_bytes / GIB:.2f} GiB workspace margin. Largest batch b: "
        f"fixed + b x per clip x {1 + estimate.fragmentation_margin:.2f} (allocator "
        "fragmentation margin) <= budget. BN rows: the per-device batch is the BN statistics "
        "batch. GN rows: accumulation steps give the same gradients as a larger batch."
    )


CHECKPOINTING_NOTE = (
    "Checkpointing: the named stages keep only each block's input and recompute the rest in "
    "backward (exact: same gradients, BN running statistics updated once). Extra compute: the "
    "recomputed forward FLOPs (convolutions, linear) over a plain step's forward + backward."
)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_on_hyphens=False)


def checkpointing_overheads(args: argparse.Namespace, cells: list[Cell]) -> dict[tuple, float]:
    """(norm, frames, stages) -> extra compute of checkpointing those stages."""
    overheads: dict[tuple, float] = {}
    for cell, stages in itertools.product(cells, args.checkpointing):
        key = (cell.norm, cell.num_frames, stages)
        if key not in overheads:
            kwargs = model_kwargs(args, cell.norm)
            overheads[key] = recompute_overhead(kwargs, cell.num_frames, args.crop, stages)
    return overheads


def estimate_cells(args: argparse.Namespace, cells: list[Cell]) -> dict[tuple, MemoryEstimate]:
    """Estimate each distinct (norm, frames, dtype, checkpointing) once; rows share them."""
    estimates: dict[tuple, MemoryEstimate] = {}
    for cell, stages in itertools.product(cells, args.checkpointing):
        kwargs = model_kwargs(args, cell.norm) | {"activation_checkpointing": stages}
        for dtype in args.dtype:
            key = (cell.norm, cell.num_frames, dtype, stages)
            if key not in estimates:
                estimates[key] = estimate_memory(
                    kwargs,
                    num_frames=cell.num_frames,
                    crop_size=args.crop,
                    dtype=dtype,
                    channels_last=args.channels_last,
                    optimizer=args.optimizer,
                    workspace_bytes=int(args.workspace_gb * GIB),
                    autocast_policy=args.autocast_policy,
                )
    return estimates


def print_plans(args: argparse.Namespace, cells: list[Cell], estimates: dict) -> None:
    """The plan of each row for ``--target-batch`` on ``--world-size`` devices."""
    for cell in cells:
        kind = batch_statistics(build_meta_model(model_kwargs(args, cell.norm)), cell.norm)
        for dtype, stages in itertools.product(args.dtype, args.checkpointing):
            label = f"{cell.label} {dtype}"
            if stages:
                label += f" checkpointing {checkpointing_label(stages)}"
            try:
                plan = plan_from_estimate(
                    estimates[cell.norm, cell.num_frames, dtype, stages],
                    int(args.budget_gb * GIB),
                    batch_statistics=kind,
                    target_total_batch=args.target_batch,
                    world_size=args.world_size,
                )
            except ValueError as e:
                print(f"\n{label}: no plan: {e}")
                continue
            print("\n" + _wrap(f"{label}: {plan.describe()}"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["frontier"]:
        from videogn.cli.plan_frontier import main as frontier_main

        return frontier_main(argv[1:])
    args = build_parser().parse_args(argv)
    cells = args.cell or list(TABLE8_CELLS)
    try:
        estimates = estimate_cells(args, cells)
    except (TypeError, ValueError) as e:
        print(f"videogn-plan: {e}", file=sys.stderr)
        return 2
    settings = list(itertools.product(args.dtype, args.checkpointing))
    overheads = checkpointing_overheads(args, cells)
    rows = [
        _row(cell, setting, estimates, overheads, args) for cell in cells for setting in settings
    ]
    budgets = [f"{gb:g} GiB" for gb in args.budgets_gb]
    headers = [
        "cell",
        "dtype",
        "autocast",
        "checkpointing",
        "extra compute",
        "GiB/clip",
        "fixed GiB",
        "paper bs needs GiB",
        *budgets,
    ]
    print(format_table(headers, rows, args.markdown))
    print()
    print(_wrap(_footer(next(iter(estimates.values())), args.crop)))
    print(_wrap(AUTOCAST_NOTES[args.autocast_policy]))
    print(_wrap(CHECKPOINTING_NOTE))
    if args.target_batch:
        print_plans(args, cells, estimates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
