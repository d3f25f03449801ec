"""The planner's memory per GPU for every Table 8 cell, as the report shows it.

A cell with a run is planned from that run's resolved config (its own model, clip, precision
and activation checkpointing: a toy smoke run gets toy figures); a cell without one from its
experiment file, composed with hydra (the paper's scale; a few seconds of estimating each).
"""

from __future__ import annotations

import logging

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from videogn.config import CONFIG_DIR, register_configs
from videogn.engine.memory_setup import config_memory
from videogn.engine.run import RESOLVED_CONFIG
from videogn.memory.estimate import GIB
from videogn.sweep.cells import Cell
from videogn.sweep.report import CellResult

logger = logging.getLogger(__name__)


def experiment_config(cell: Cell) -> DictConfig:
    """The composed training config of ``cell``'s experiment file."""
    overrides = [f"experiment={cell.experiment}", "model.pretrained=none"]
    if GlobalHydra.instance().is_initialized():  # inside a hydra app or test: its config dir
        return compose("train", overrides)
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides)


def planned_memory_note(cfg: DictConfig, batch_size: int) -> str:
    """ "planner: X GiB/GPU" for ``batch_size`` clips per GPU, with the checkpointed stages."""
    memory = config_memory(cfg, batch_size)
    text = f"planner: {memory.bytes_per_gpu / GIB:.2f} GiB/GPU"
    if memory.stages:
        how = "auto" if memory.policy == "auto" else "given"
        text += (
            f", checkpointing {','.join(memory.stages)} ({how}, "
            f"{memory.extra_compute:+.0%} compute)"
        )
    return text


def memory_notes(results: list[CellResult], *, without_runs: bool = True) -> dict[tuple, str]:
    """Cell key -> the planner's memory note; a cell that cannot be planned says why.

    ``without_runs``: also plan the cells without a run, from their experiment files.
    """
    notes = {}
    for result in results:
        runs = [r for r in result.runs if r.batch > 0]
        try:
            if runs:
                cfg = OmegaConf.load(runs[-1].run_dir / RESOLVED_CONFIG)
                notes[result.cell.key] = planned_memory_note(cfg, runs[-1].batch)
            elif without_runs:
                cfg = experiment_config(result.cell)
                notes[result.cell.key] = planned_memory_note(cfg, result.cell.batch)
        except (ValueError, TypeError, KeyError) as e:
            logger.warning("no memory plan for %s: %s", result.cell.experiment, e)
            notes[result.cell.key] = f"planner: not planned ({e})"
    return notes
