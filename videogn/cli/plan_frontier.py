"""``videogn-plan frontier``: the largest per-GPU batch at each clip length, per setting.

For each norm x precision x activation-checkpointing setting and each clip length (8 ... 128
frames at the sampler's crop, 224 for Kinetics), the largest per-GPU batch that fits each
budget: a table per budget, and with ``--plot`` a figure with a panel per budget. Table 8's
three cells (32 frames at 8 and 4 clips per GPU, 64 frames at 4) are marked::

    videogn-plan frontier                                    # 16, 24, 40, 80, 141 GiB
    videogn-plan frontier --budget-gb 80 --world-size 8 --plot frontier.png
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from videogn.cli.plan_options import (
    AUTOCAST_NOTES,
    add_model_options,
    checkpointing_arg,
    format_table,
    model_kwargs,
)
from videogn.memory.estimate import GIB
from videogn.memory.frontier import (
    CLIP_LENGTHS,
    PAPER_CELLS,
    estimate_frontier,
    frontier_table,
    largest_batches,
    plot_frontier,
    settings_grid,
)
from videogn.models.i3d import CHECKPOINT_STAGES

FRONTIER_BUDGETS_GB = (16, 24, 40, 80, 141)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogn-plan frontier",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--budget-gb",
        type=float,
        nargs="+",
        default=list(FRONTIER_BUDGETS_GB),
        help="per-GPU budgets in GiB, a table (and panel) each (default 16 24 40 80 141)",
    )
    add("--world-size", type=int, default=1, help="GPUs: totals appear in parentheses")
    add("--plot", help="write the frontier figure (PNG) here")
    add("--norms", nargs="+", default=["bn", "gn"], help="norms (default bn gn)")
    add(
        "--frames",
        type=int,
        nargs="+",
        default=list(CLIP_LENGTHS),
        help="clip lengths (default 8 16 32 64 128)",
    )
    add(
        "--checkpointing",
        type=checkpointing_arg,
        nargs="+",
        default=[(), CHECKPOINT_STAGES],
        help="activation checkpointing settings: none, all, or stages such as res2,res3 "
        "(default none all)",
    )
    add("--markdown", action="store_true", help="print Markdown tables")
    add_model_options(parser)
    return parser


def _notes(args: argparse.Namespace) -> str:
    paper = ", ".join(f"{frames} frames x {batch}" for frames, batch in PAPER_CELLS)
    total = " (in parentheses: the total over the GPUs)" if args.world_size > 1 else ""
    return (
        f"Largest per-GPU batch{total} for I3D training steps on T x {args.crop} x {args.crop} "
        f"clips. Table 8's cells are {paper} clips per GPU: '*' marks a 32- or 64-frame "
        "cell where the paper's batch fits, '!' one where it does not. "
        + AUTOCAST_NOTES[args.autocast_policy]
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.world_size < 1 or any(gb <= 0 for gb in args.budget_gb):
        print(
            "videogn-plan frontier: --world-size and --budget-gb must be positive", file=sys.stderr
        )
        return 2
    settings = settings_grid(args.norms, args.dtype, args.checkpointing)
    try:
        estimates = estimate_frontier(
            lambda norm: model_kwargs(args, norm),
            settings,
            args.frames,
            args.crop,
            channels_last=args.channels_last,
            optimizer=args.optimizer,
            workspace_bytes=int(args.workspace_gb * GIB),
            autocast_policy=args.autocast_policy,
        )
    except (TypeError, ValueError) as e:
        print(f"videogn-plan frontier: {e}", file=sys.stderr)
        return 2
    panels = {gb: largest_batches(estimates, int(gb * GIB)) for gb in args.budget_gb}
    for gb, batches in panels.items():
        headers, rows = frontier_table(batches, settings, args.frames, args.world_size)
        gpus = f", {args.world_size} GPUs" if args.world_size > 1 else ""
        print(f"\n{gb:g} GiB per GPU{gpus}\n")
        print(format_table(headers, rows, args.markdown))
    print("\n" + textwrap.fill(_notes(args), width=100, break_on_hyphens=False))
    if args.plot:
        plot_frontier(
            panels,
            settings,
            args.frames,
            args.plot,
            crop_size=args.crop,
            world_size=args.world_size,
        )
        print(f"\nFrontier plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
