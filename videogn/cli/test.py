"""``videogn-test``: multi-view test of a trained checkpoint.

The model (and, unless overridden, the data and clip settings) are restored from the config
recorded in the checkpoint; only the keys given on the command line replace them::

    videogn-test checkpoint=outputs/demo/2024-01-01_12-00-00            # latest checkpoint
    videogn-test checkpoint=run/checkpoints/iter_00001000.pt test.num_crops=3 sampler=64x1
    videogn-test checkpoint=RUN data.root=/other/copy/of/kinetics400

Results go to ``<run dir>/test_<time>/`` (``hydra.run.dir=...`` to choose).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from videogn.config import CONFIG_DIR, exit_on_bad_overrides, register_configs
from videogn.engine import distributed
from videogn.engine.checkpoint import CHECKPOINT_DIR
from videogn.engine.run import test_checkpoint

logger = logging.getLogger("videogn.test")

register_configs()


def default_test_dir(checkpoint: str) -> str:
    """``<run dir>/test_<time>`` for a checkpoint file or a run directory."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        run_dir = path
    elif path.parent.name == CHECKPOINT_DIR:
        run_dir = path.parent.parent
    else:
        run_dir = path.parent
    return str(run_dir / f"test_{datetime.now():%Y-%m-%d_%H-%M-%S}")


OmegaConf.register_new_resolver("videogn_test_dir", default_test_dir, replace=True)


def command_line_overrides(cfg: DictConfig) -> DictConfig:
    """The parts of ``cfg`` the user set on the command line (validated by the schema)."""
    picked = OmegaConf.create()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "checkpoint" or key.startswith("hydra"):
            continue
        OmegaConf.update(picked, key, OmegaConf.select(cfg, key), force_add=True)
    return picked


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="test")
def hydra_main(cfg: DictConfig) -> None:
    out_dir = HydraConfig.get().runtime.output_dir
    finished = False
    try:
        summary = test_checkpoint(cfg.checkpoint, command_line_overrides(cfg), out_dir)
        finished = True
    finally:
        distributed.shutdown_distributed(synchronize=finished)
    if summary is None:
        return
    if "video_top1" in summary:
        logger.info(
            "video top-1 %.1f%% (chance %.1f%%), top-5 %.1f%%, clip top-1 %.1f%%; %d of %d videos "
            "evaluated, %d failed; results in %s",
            summary["video_top1"],
            summary["chance_top1"],
            summary["video_top5"],
            summary["clip_top1"],
            summary["videos_evaluated"],
            summary["videos_listed"],
            summary["videos_failed"],
            summary["results_file"],
        )
    else:
        logger.error("no video could be evaluated; see %s", summary["results_file"])
        sys.exit(1)


def main() -> None:
    exit_on_bad_overrides(sys.argv[1:], "test")
    hydra_main()


if __name__ == "__main__":
    main()
