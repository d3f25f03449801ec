"""Launch a set of experiments as ONE hydra multirun of ``videogn-train``.

Locally (hydra's basic launcher) the jobs run one after another in one process; with
``--nproc-per-node N`` that process is started by torchrun, so every job is an N-process DDP
run (the engine tears its process group down after each job and joins a new one for the
next). With ``hydra/launcher=table8_slurm`` hydra-submitit-launcher submits one SLURM job per
experiment, each with one task per GPU (see ``conf/hydra/launcher/table8_slurm.yaml``).

Each job writes to ``<sweep dir>/<config name>`` (``hydra.sweep.subdir=${name}``, plus the
seed when several are swept), so a relaunch into the same sweep directory resumes unfinished
runs from their checkpoints and a finished run can be skipped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from videogn.engine.evaluate import RESULTS_FILE

logger = logging.getLogger(__name__)


@dataclass
class Multirun:
    """What to launch.

    Attributes:
        experiments: config names under ``conf/experiment/`` (one job each, times seeds).
        sweep_dir: hydra.sweep.dir.
        overrides: extra ``key=value`` overrides applied to every job.
        seeds: swept as ``seed=a,b,...`` when given (run dirs get a ``_seed{n}`` suffix).
        nproc_per_node: >1 runs the multirun under torchrun (local multi-GPU / multi-process).
        launcher: a ``hydra/launcher`` option (e.g. "table8_slurm"); None: the basic launcher.
    """

    experiments: list[str]
    sweep_dir: Path
    overrides: list[str]
    seeds: list[int] | None = None
    nproc_per_node: int = 1
    launcher: str | None = None

    def command(self) -> list[str]:
        subdir = "${name}_seed${seed}" if self.seeds else "${name}"
        args = [
            "-m",
            "experiment=" + ",".join(self.experiments),
            f"hydra.sweep.dir={self.sweep_dir}",
            f"hydra.sweep.subdir={subdir}",
        ]
        if self.seeds:
            args.append("seed=" + ",".join(str(s) for s in self.seeds))
        if self.launcher:
            args.append(f"hydra/launcher={self.launcher}")
        args += self.overrides
        if self.nproc_per_node > 1:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            torchrun.append(f"--nproc_per_node={self.nproc_per_node}")
            return [*torchrun, "-m", "videogn.cli.train", *args]
        return [sys.executable, "-m", "videogn.cli.train", *args]


def experiment_name(experiment: str) -> str:
    """The ``name:`` an experiment file sets (its run directory's name)."""
    from videogn.config import CONFIG_DIR

    path = Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no experiment config {path} (experiment={experiment})")
    name = OmegaConf.load(path).get("name")
    if not name:
        raise ValueError(f"{path} sets no 'name:'; sweeps need one per experiment")
    return str(name)


def unfinished(experiments: list[str], sweep_dir: Path) -> list[str]:
    """The experiments whose run directory in ``sweep_dir`` has no ``results.json`` yet."""
    todo = []
    for experiment in experiments:
        run_dir = Path(sweep_dir) / experiment_name(experiment)
        if (run_dir / RESULTS_FILE).is_file():
            logger.info("skipping %s: %s is already tested", experiment, run_dir)
        else:
            todo.append(experiment)
    return todo


def run_multirun(multirun: Multirun, env: dict | None = None, dry_run: bool = False) -> int:
    """Run the multirun command; returns its exit status (non-zero if any job failed)."""
    command = multirun.command()
    print("+ " + " ".join(_quote(a) for a in command), flush=True)
    if dry_run:
        return 0
    # None removes a variable (e.g. a pretrained path the user exported, for --from-scratch).
    merged_env = {**os.environ, **(env or {})}
    merged_env = {k: v for k, v in merged_env.items() if v is not None}
    return subprocess.run(command, env=merged_env, check=False).returncode


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " ${}[]*") else arg
