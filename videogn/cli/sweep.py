"""``videogn-sweep``: the GN paper's Table 8 as commands.

    videogn-sweep table8 data.root=/data/kinetics400          # six runs, one hydra multirun
    videogn-sweep table8 --slurm data.root=... hydra.launcher.partition=gpu
    videogn-sweep table8 --smoke                              # all six at toy scale (CI)
    videogn-sweep table8 --extended data.root=...             # plus 3 cells beyond the paper
    videogn-sweep report multirun/table8 [more run dirs]      # Markdown table + plot
    videogn-sweep curves multirun/table8 --out figure7.png    # Figure 7's error curves
    videogn-sweep clip-length outputs/RUN                     # one model, many test clips
    videogn-sweep mini-table8 [--quick]                       # the CPU analogue -> docs/

See docs/EXPERIMENTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

EPILOG = """examples:
  export VIDEOGN_PRETRAINED_BN=i3d_r50_bn_imagenet.pt VIDEOGN_PRETRAINED_GN=i3d_r50_gn_imagenet.pt
  videogn-sweep table8 --nproc-per-node 8 data.root=/data/kinetics400
  videogn-sweep table8 --slurm data.root=/data/kinetics400 hydra.launcher.partition=gpu
  videogn-sweep table8 --smoke --sweep-dir /tmp/t8smoke
  videogn-sweep report multirun/table8 --out table8.md --plot table8.png
  videogn-sweep curves multirun/table8/table8_bn_32x2_bs8 multirun/table8/table8_bn_32x2_bs4
  videogn-sweep clip-length multirun/table8/table8_gn_32x2_bs8 --num-clips 1,3,10
  videogn-sweep mini-table8 --quick
"""


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _clips(text: str) -> list[tuple[int, int]]:
    from videogn.sweep.clip_length import parse_clip

    try:
        return [parse_clip(x) for x in text.split(",") if x]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_table8(sub) -> None:
    t8 = sub.add_parser("table8", help="train and test the six Table 8 cells (hydra multirun)")
    t8.add_argument("overrides", nargs="*", help="hydra overrides for every run (data.root=...)")
    t8.add_argument("--sweep-dir", type=Path, help="default multirun/table8[_smoke]")
    t8.add_argument("--smoke", action="store_true", help="toy scale on the demo dataset (CI)")
    t8.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes (GPUs) per run, via torchrun; fewer than 8 accumulate gradients "
        "to the paper's total batch",
    )
    t8.add_argument(
        "--slurm",
        action="store_true",
        help="submit with hydra/launcher=table8_slurm (one 8-GPU job per cell)",
    )
    t8.add_argument(
        "--from-scratch",
        action="store_true",
        help="no ImageNet initialization: every cell gets model.pretrained=none (without it, "
        "VIDEOGN_PRETRAINED_BN/_GN or the named defaults torchvision:resnet50 and "
        "detectron:R-50-GN)",
    )
    t8.add_argument("--dry-run", action="store_true", help="print the multirun command only")
    t8.add_argument(
        "--extended",
        action="store_true",
        help="also the cells beyond the paper: BN and GN 64x1 at 8 clips per GPU, GN 128x1 at "
        "4 (activation checkpointing auto)",
    )


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="Table 8 (Markdown + PNG) from run directories")
    rep.add_argument("run_dirs", nargs="+", type=Path, help="run dirs or folders holding them")
    rep.add_argument("--out", type=Path, default=Path("table8.md"))
    rep.add_argument("--plot", type=Path, help="default: --out with .png")
    rep.add_argument("--mini", action="store_true", help="the mini Table 8's cells")
    rep.add_argument(
        "--extended",
        action="store_true",
        default=None,
        help="show the columns beyond the paper even without runs (default: when some run "
        "belongs to one)",
    )
    rep.add_argument(
        "--no-memory",
        action="store_true",
        help="leave out the planner's memory per GPU (cells without a run are planned at the "
        "paper's scale, seconds each)",
    )


def _add_curves(sub) -> None:
    cur = sub.add_parser("curves", help="Figure 7: train and val error curves of run dirs")
    cur.add_argument("run_dirs", nargs="+", type=Path, help="run dirs or folders holding them")
    cur.add_argument("--out", type=Path, default=Path("figure7.png"))
    cur.add_argument(
        "--x", dest="axis", choices=("epochs", "iterations"), default="epochs", help="x axis"
    )


def _add_clip_length(sub) -> None:
    cl = sub.add_parser("clip-length", help="evaluate one checkpoint at many test clips")
    cl.add_argument("checkpoint", help="a checkpoint file or a run directory")
    cl.add_argument("overrides", nargs="*", help="data.root=..., test.num_crops=3, ...")
    cl.add_argument("--clips", type=_clips, default=None, help="default 8x8,16x4,32x2,64x1,128x1")
    cl.add_argument("--num-clips", type=_ints, default=None, help="default 1,3,5,10")
    cl.add_argument("--max-videos", type=int, help="evaluate the first N listed videos only")
    cl.add_argument("--device", default="auto")
    cl.add_argument("--out", type=Path, help="default <run dir>/clip_length_<time>")


def _add_mini_table8(sub) -> None:
    mini = sub.add_parser(
        "mini-table8",
        help="the CPU analogue of Table 8 (2D pretraining, inflation, 8 cells x seeds) -> docs/",
    )
    mini.add_argument("overrides", nargs="*", help="hydra overrides for every run")
    # take 3's confirmatory seeds (docs/EXPERIMENTS.md: no pilot or diagnostic run used them)
    mini.add_argument("--seeds", type=_ints, default=[10, 11, 12], help="default 10,11,12")
    mini.add_argument("--quick", action="store_true", help="seed 10 only (about 15 minutes)")
    mini.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a task parameter (videogn.sweep.mini.flicker_task.FlickerTaskParams)",
    )
    mini.add_argument(
        "--pretrain",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a 2D pretraining parameter (videogn.sweep.mini.pretrain2d.Pretrain2dParams)",
    )
    mini.add_argument("--out-dir", type=Path, default=Path("docs"))
    mini.add_argument("--sweep-dir", type=Path, default=None, help="default multirun/mini_table8")
    mini.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the 2D nets and the task's videos go (default $VIDEOGN_CACHE or "
        "~/.cache/videogn)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogn-sweep",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_table8(sub)
    _add_report(sub)
    _add_curves(sub)
    _add_clip_length(sub)
    _add_mini_table8(sub)
    return parser


def cmd_table8(args) -> int:
    from videogn.sweep.table8 import launch_table8

    sweep_dir = args.sweep_dir or Path("multirun") / ("table8_smoke" if args.smoke else "table8")
    return launch_table8(
        sweep_dir,
        args.overrides,
        smoke=args.smoke,
        from_scratch=args.from_scratch,
        nproc_per_node=args.nproc_per_node,
        slurm=args.slurm,
        dry_run=args.dry_run,
        extended=args.extended,
    )


def cmd_report(args) -> int:
    plot = args.plot or args.out.with_suffix(".png")
    if args.mini:
        from videogn.sweep.mini.report import report_mini

        text = report_mini(args.run_dirs, args.out, plot)
    else:
        from videogn.sweep.table8 import report_table8

        text = report_table8(
            args.run_dirs, args.out, plot, extended=args.extended, plan_memory=not args.no_memory
        )
    print(text)
    print(f"\nwrote {args.out} and {plot}")
    return 0


def cmd_curves(args) -> int:
    from videogn.sweep.curves import curves_markdown, write_curves

    summary = write_curves(args.run_dirs, args.out, axis=args.axis)
    print(curves_markdown(summary))
    print(f"\nwrote {args.out}")
    return 0


def cmd_clip_length(args) -> int:
    from videogn.data.transforms import describe_views
    from videogn.engine.checkpoint import resolve_checkpoint
    from videogn.sweep.clip_length import (
        DEFAULT_CLIPS,
        DEFAULT_NUM_CLIPS,
        evaluate_checkpoint,
        parse_clip,
        plot_sweep,
        sweep_markdown,
    )

    clips = args.clips or [parse_clip(c) for c in DEFAULT_CLIPS]
    summary = evaluate_checkpoint(
        args.checkpoint,
        clips=clips,
        num_clips=args.num_clips or list(DEFAULT_NUM_CLIPS),
        overrides=args.overrides,
        max_videos=args.max_videos,
        device=args.device,
    )
    path = resolve_checkpoint(args.checkpoint)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = args.out or run_dir / f"clip_length_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)
    table = sweep_markdown(summary)
    (out / "clip_length.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "clip_length.md").write_text(
        f"# Test clip sweep of {summary['checkpoint']}\n\n"
        f"Video top-1 / top-5 (%), {describe_views(summary['num_crops'])} at "
        f"{summary['test_size']}, "
        f"{summary['videos_listed']} videos listed.\n\n{table}\n\n![sweep](clip_length.png)\n"
    )
    plot_sweep(summary, out / "clip_length.png")
    print(table)
    if summary["failures"]:
        print(f"{len(summary['failures'])} videos failed (see clip_length.json)")
    print(f"\nwrote {out}/clip_length.md, clip_length.json, clip_length.png")
    return 0


def _key_values(pairs: list[str], option: str) -> dict:
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{option} expects KEY=VALUE, got {pair!r}")
        try:  # numbers, and lists such as disk_radius=[10,14]
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(
                f"{option} {key}: {value!r} is not a number or a JSON list (e.g. {key}=[10,14])"
            ) from None
    return changes


def cmd_mini(args) -> int:
    from videogn.sweep.mini.study import run_mini_table8

    return run_mini_table8(
        out_dir=args.out_dir,
        sweep_dir=args.sweep_dir or Path("multirun") / "mini_table8",
        seeds=[10] if args.quick else args.seeds,
        overrides=args.overrides,
        cache_dir=args.cache_dir,
        argv=sys.argv,
        pretrain_params=_key_values(args.pretrain, "--pretrain"),
        task_params=_key_values(args.task, "--task"),
    )


COMMANDS = {
    "table8": cmd_table8,
    "report": cmd_report,
    "curves": cmd_curves,
    "clip-length": cmd_clip_length,
    "mini-table8": cmd_mini,
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"videogn-sweep {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
