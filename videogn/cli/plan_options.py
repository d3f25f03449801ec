"""Options and helpers shared by ``videogn-plan`` and ``videogn-plan frontier``.

Both commands import this module; it imports neither, so the two stay free of an import cycle.
"""

from __future__ import annotations

import argparse

from videogn.memory.checkpointing import parse_activation_checkpointing
from videogn.memory.estimate import DEFAULT_WORKSPACE_BYTES, GIB, OPTIMIZER_STATES
from videogn.memory.tracking import AUTOCAST_POLICIES

AUTOCAST_NOTES = {
    "cuda": (
        "bf16/fp16 rows assume CUDA autocast's op lists (conv and linear in low precision, "
        "softmax and losses in fp32; videogn's GN keeps its bf16/fp16 input and fp32 statistics "
        "instead of autocast's fp32 upcast). Estimated on meta tensors; not measured on a GPU."
    ),
    "cpu": (
        "bf16/fp16 rows assume CPU autocast's op lists (conv and linear in low precision, "
        "pooling and losses in fp32), as a real CPU step runs them."
    ),
}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Model, clip and precision options shared by the table and ``videogn-plan frontier``."""
    add = parser.add_argument
    add("--model", default="i3d_r50", help="registered model name (default i3d_r50)")
    add("--depth", type=int, help="model override: ResNet depth, 50 or 101")
    add("--base-width", type=int, help="model override: stem / res2 width (paper: 64)")
    add("--stage-depths", help="model override: blocks per stage, e.g. 3,4,6,3")
    add("--num-groups", type=int, help="GN groups (default 32)")
    add("--num-classes", type=int, default=400)
    add("--crop", type=int, default=224, help="crop size (default 224, the Kinetics sampler's)")
    add("--dtype", nargs="+", default=["fp32", "bf16"], help="fp32, bf16, fp16 (autocast)")
    add("--channels-last", action="store_true", help="channels_last_3d memory format")
    add(
        "--autocast-policy",
        default="cuda",
        choices=sorted(AUTOCAST_POLICIES),
        help="whose autocast op lists bf16/fp16 rows follow (default cuda: training on GPUs)",
    )
    add("--optimizer", default="sgd", choices=sorted(OPTIMIZER_STATES))
    add(
        "--workspace-gb",
        type=float,
        default=DEFAULT_WORKSPACE_BYTES / GIB,
        help="workspace margin in GiB (CUDA context, cuDNN/cuBLAS workspaces; default 1)",
    )


def model_kwargs(args: argparse.Namespace, norm: str) -> dict:
    """``create_model`` arguments of a row, from the command line's model options."""
    kwargs: dict = {"name": args.model, "norm": norm, "num_classes": args.num_classes}
    if args.num_groups is not None and norm == "gn":
        kwargs["norm_kwargs"] = {"num_groups": args.num_groups}
    if args.depth is not None:
        kwargs["depth"] = args.depth
    if args.base_width is not None:
        kwargs["base_width"] = args.base_width
    if args.stage_depths:
        kwargs["stage_depths"] = tuple(int(d) for d in args.stage_depths.split(","))
    return kwargs


def format_table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [headers, ["---"] * len(headers), *rows]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = lambda cells: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def checkpointing_arg(text: str) -> tuple[str, ...]:
    """ "none", "all" or comma-separated stages -> the stages to checkpoint."""
    value = text if text in ("none", "all") else [s for s in text.split(",") if s]
    try:
        stages = parse_activation_checkpointing(value, key="--checkpointing")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if stages == "auto":
        raise argparse.ArgumentTypeError("--checkpointing auto: give stages; auto is for training")
    return stages
