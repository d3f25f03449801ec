"""``videogn-sweep table8``: the six Table 8 runs as one hydra multirun, then the report.

The experiment files (``conf/experiment/table8/*.yaml``) hold the paper's setting: 8 GPUs
with 8 or 4 clips each. On fewer local processes the same total batch is kept by gradient
accumulation (``trainer.accumulation_steps = 8 / processes``): every micro-batch still
normalizes its own 8 or 4 clips, so BN sees exactly the statistics batch of the paper, and
the step, lr and schedule are those of 8 GPUs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from videogn.models.pretrained_sources import is_named, lookup
from videogn.sweep.cells import TABLE8, TABLE8_EXTENDED, TABLE8_WORLD_SIZE
from videogn.sweep.launch import Multirun, run_multirun, unfinished
from videogn.sweep.report import match_runs, write_report
from videogn.sweep.runs import read_runs

logger = logging.getLogger(__name__)

FIGURE7 = "figure7.png"  # written beside table8.md
PRETRAINED_ENV = {"bn": "VIDEOGN_PRETRAINED_BN", "gn": "VIDEOGN_PRETRAINED_GN"}
# What the experiment files start from when the variables are unset (conf/experiment/table8).
DEFAULT_SOURCES = {"bn": "torchvision:resnet50", "gn": "detectron:R-50-GN"}
SCRATCH_OVERRIDE = "model.pretrained=none"  # explicit: the cells require weights otherwise

# Toy scale for CI: the demo dataset at 16x16 pixels, the one-block-per-stage I3D of width 8,
# one epoch of 16 videos. The six cells keep their norm, clip (32x2 or 64x1: the 24-frame
# videos loop) and per-process batch, so the multirun, the run directories, the 10-clip test
# and the report are all the real ones.
SMOKE_OVERRIDES = (
    "data=demo",
    "model=i3d_tiny",
    SCRATCH_OVERRIDE,
    "data.num_classes=4",
    "data.demo.params.train_videos_per_class=4",
    "data.demo.params.val_videos_per_class=2",
    "data.demo.params.frames_per_video=24",
    "data.demo.params.frame_size=32",
    "data.demo.params.event_gap=8",
    "data.demo.params.event_length=2",
    "data.num_workers=0",
    "data.scale_range=[16,20]",
    "data.crop_size=16",
    "optim.epochs=1",
    "optim.warmup_epochs=0",
    "test.short_side=16",
    "test.crop_size=16",
    "test.num_workers=0",
    "trainer.num_threads=1",
    "trainer.progress_bar=false",
    "trainer.precise_bn.num_batches=2",
    "trainer.checkpoint_period=0",
    "trainer.keep_checkpoints=1",
    "trainer.val_period=1",  # a validation point per iteration: the curves get a few points
)


def accumulation_steps(world_size: int) -> int:
    """Micro-batches per step that make ``world_size`` processes match the paper's 8 GPUs."""
    if world_size < 1 or TABLE8_WORLD_SIZE % world_size:
        raise ValueError(
            f"Table 8 runs on {TABLE8_WORLD_SIZE} GPUs; {world_size} processes cannot reach the "
            f"same total batch by accumulation (use 1, 2, 4 or 8 processes per run)"
        )
    return TABLE8_WORLD_SIZE // world_size


def pretrained_env(from_scratch: bool, overrides: list[str]) -> dict[str, str | None]:
    """VIDEOGN_PRETRAINED_BN / _GN as the jobs get them, checked before any job starts.

    Unset, a cell starts from its experiment file's named source (``torchvision:resnet50``
    for BN, ``detectron:R-50-GN`` for GN, downloaded on first use); set, from that file or
    named source. ``from_scratch`` removes both (the jobs then get ``model.pretrained=none``).

    Raises:
        ValueError: a variable names a missing file or an unknown source, or
            ``model.pretrained=`` was given (one value would go to BN and GN runs alike).
    """
    if any(o.split("=", 1)[0].lstrip("+") == "model.pretrained" for o in overrides):
        raise ValueError(
            "model.pretrained=... would give the BN and the GN runs the same weights; set "
            "VIDEOGN_PRETRAINED_BN and VIDEOGN_PRETRAINED_GN instead (see docs/EXPERIMENTS.md)"
        )
    if from_scratch:
        return {name: None for name in PRETRAINED_ENV.values()}
    env: dict[str, str | None] = {}
    for norm, name in PRETRAINED_ENV.items():
        value = os.environ.get(name)
        if value is None:
            logger.info("%s unset: the %s cells start from %s", name, norm, DEFAULT_SOURCES[norm])
            continue
        if not value.strip():  # every job would stop on model.require_pretrained: say it now
            raise ValueError(
                f"{name} is set but empty: unset it for the default {DEFAULT_SOURCES[norm]}, "
                "set a file or a named source, or pass --from-scratch"
            )
        if is_named(value):
            lookup(value)  # an unknown name fails here, before any job
            env[name] = value
        elif not Path(value).expanduser().is_file():
            raise ValueError(f"{name}={value}: no such file (nor a named source)")
        else:
            env[name] = str(Path(value).expanduser().resolve())
    return env


def table8_multirun(
    sweep_dir: Path,
    overrides: list[str],
    *,
    smoke: bool = False,
    nproc_per_node: int = 1,
    slurm: bool = False,
    skip_finished: bool = True,
    extended: bool = False,
) -> Multirun:
    """The multirun of the Table 8 cells (``extended``: and those beyond the paper) not yet
    tested in ``sweep_dir``."""
    experiments = [cell.experiment for cell in table8_cells(extended)]
    if skip_finished:
        experiments = unfinished(experiments, sweep_dir)
    extra = list(SMOKE_OVERRIDES) + [f"data.demo.cache_dir={sweep_dir / '.demo_cache'}"]
    extra = extra if smoke else []
    user_sets_accumulation = any(o.startswith("trainer.accumulation_steps=") for o in overrides)
    if not (smoke or slurm or user_sets_accumulation):
        extra.append(f"trainer.accumulation_steps={accumulation_steps(nproc_per_node)}")
    return Multirun(
        experiments=experiments,
        sweep_dir=sweep_dir,
        overrides=extra + list(overrides),
        nproc_per_node=1 if slurm else nproc_per_node,
        launcher="table8_slurm" if slurm else None,
    )


def launch_table8(
    sweep_dir: str | Path,
    overrides: list[str],
    *,
    smoke: bool = False,
    from_scratch: bool = False,
    nproc_per_node: int = 1,
    slurm: bool = False,
    dry_run: bool = False,
    extended: bool = False,
) -> int:
    """Train and test the Table 8 cells (``extended``: and the three beyond the paper), then
    write ``<sweep dir>/table8.md`` and ``.png``."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    env = pretrained_env(from_scratch or smoke, overrides)
    if from_scratch and not smoke:
        overrides = [*overrides, SCRATCH_OVERRIDE]
    multirun = table8_multirun(
        sweep_dir,
        overrides,
        smoke=smoke,
        nproc_per_node=nproc_per_node,
        slurm=slurm,
        extended=extended,
    )
    status = 0
    if multirun.experiments:
        status = run_multirun(multirun, env=env, dry_run=dry_run)
    else:
        logger.info("every Table 8 cell in %s is tested already", sweep_dir)
    if dry_run:
        return status
    if any(sweep_dir.rglob("config.yaml")):
        text = report_table8(
            [sweep_dir], sweep_dir / "table8.md", sweep_dir / "table8.png", extended=extended
        )
        print(text)
    return status


def table8_cells(extended: bool) -> tuple:
    return TABLE8 + TABLE8_EXTENDED if extended else TABLE8


def report_table8(
    paths: list[str | Path],
    out_md: str | Path,
    out_png: str | Path,
    *,
    extended: bool | None = None,
    plan_memory: bool | str = True,
) -> str:
    """``videogn-sweep report``: Table 8 from run directories (or folders holding them).

    ``extended``: also the columns beyond the paper (None: when some run belongs to one).
    ``plan_memory``: every cell shows the planner's memory per GPU
    (:mod:`videogn.sweep.planned`; a cell without a run is planned at the paper's scale,
    seconds of estimating each); "runs": only the cells with a run; False: none.
    """
    from videogn.sweep.planned import memory_notes

    records = read_runs(paths)
    if extended is None:
        extended = any(r.key == c.key for r in records for c in TABLE8_EXTENDED)
    results, unmatched = match_runs(table8_cells(extended), records)
    preamble = (
        "GN paper (Wu & He, ECCV 2018) Table 8: I3D ResNet-50 on Kinetics-400, 8 GPUs, "
        "10-clip test. Columns: training clip (frames × interval), clips per GPU (the BN "
        "statistics batch)."
    )
    if extended:
        preamble += (
            " Columns marked *beyond the paper* are the cells its memory ruled out, reached "
            "with activation checkpointing (`trainer.activation_checkpointing: auto`)."
        )
    toy = [r for r in records if r.dataset != "kinetics400" or r.base_width != 64]
    if toy:
        preamble += (
            f"\n\n**{len(toy)} of {len(records)} runs are not at the paper's scale** (dataset "
            f"{', '.join(sorted({r.dataset for r in toy}))}, or a reduced model): their "
            "differences to the paper's numbers mean nothing."
        )
    unscratched = [r for r in records if r.dataset == "kinetics400" and not r.pretrained]
    if unscratched:
        preamble += (
            f"\n\n{len(unscratched)} Kinetics run(s) started from scratch, not from an "
            "ImageNet ResNet-50 as in the paper."
        )
    return write_report(
        results, unmatched, out_md, out_png, title="Table 8", unit="GPU", preamble=preamble,
        appendix=figure7_section(paths, Path(out_md).with_name(FIGURE7)),
        cell_notes=(
            memory_notes(results, without_runs=plan_memory != "runs") if plan_memory else None
        ),
    )  # fmt: skip


def figure7_section(paths: list[str | Path], out_png: Path) -> str:
    """Draw Figure 7 (the error curves) beside the report; its Markdown section ("" if no run
    has logged a training step yet)."""
    from videogn.sweep.curves import curves_markdown, write_curves

    try:
        summary = write_curves(paths, out_png, axis=None)
    except ValueError as e:  # no run logged a step yet
        logger.info("no training curves to draw: %s", e)
        return ""
    return "\n\n".join((
        "## Training curves (the paper's Figure 7)",
        "Top-1 error: training (thin, over each log window) and 1-clip validation with the "
        "training augmentation (bold, `trainer.val_period`); seeds averaged.",
        f"![Figure 7]({out_png.name})",
        curves_markdown(summary),
    ))  # fmt: skip
