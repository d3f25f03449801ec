"""``videogn-train``: train (resuming if possible), then run the multi-view test.

With no arguments it is the demo: a small I3D on the generated demo dataset, a few minutes
on 2 CPU cores. Kinetics runs pick an experiment::

    videogn-train experiment=kinetics400_i3d_bn data.root=/data/kinetics400
    torchrun --nproc_per_node=8 -m videogn.cli.train experiment=kinetics400_i3d_bn ...
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from videogn.config import CONFIG_DIR, exit_on_bad_overrides, register_configs
from videogn.data.transforms import describe_views
from videogn.engine import distributed
from videogn.engine.builders.model import PretrainedRequiredError
from videogn.engine.evaluate import RESULTS_FILE, SCORES_FILE
from videogn.engine.faults import RunInterrupted
from videogn.engine.guards import NonFiniteLossError
from videogn.engine.run import train
from videogn.models.pretrained_sources import PretrainedSourceError

logger = logging.getLogger("videogn.train")
EXIT_NON_FINITE = 3
EXIT_BAD_INPUT = 2
KINETICS_COMMAND = "videogn-train experiment=kinetics400_i3d_bn data.root=/path/to/kinetics400"

register_configs()


def format_summary(summary: dict, seconds: float) -> str:
    """The closing message: accuracy against chance, where the outputs are, what next."""
    run_dir = summary["run_dir"]
    lines = [
        "",
        "=" * 78,
        f"videogn-train {summary['status']} after {summary['iterations']} iterations "
        f"in {seconds / 60:.1f} min ({summary['world_size']} process(es))",
    ]
    test = summary.get("test")
    if test and "video_top1" in test:
        lines += [
            f"test ({test['num_clips']} clips x {describe_views(test['num_crops'])} per video, "
            f"{test['aggregate']} of softmax):",
            f"  video top-1 {test['video_top1']:.1f}%   (chance {test['chance_top1']:.1f}% "
            f"with {test['num_classes']} classes)   top-5 {test['video_top5']:.1f}%",
            f"  clip  top-1 {test['clip_top1']:.1f}%   "
            f"mean per-class {test['mean_class_accuracy']:.1f}%",
            f"  {test['videos_evaluated']} of {test['videos_listed']} videos evaluated, "
            f"{test['videos_failed']} failed",
        ]
    elif summary.get("requeued"):
        lines.append("stopped by the time-limit signal; the requeued SLURM job resumes the run")
    elif summary["status"] == "preempted":
        lines.append(
            f"stopped by a signal; rerun the same command with hydra.run.dir={run_dir} to resume"
        )
    lines += [f"outputs in {run_dir}:", *output_lines(run_dir, summary["checkpoint"])]
    test_verb = "test again" if test else "test it"
    lines += [
        f"{test_verb + ':':<15} videogn-test checkpoint={run_dir} test.num_crops=3",
        f"Kinetics-400:   {KINETICS_COMMAND}",
        "=" * 78,
    ]
    return "\n".join(lines)


def output_lines(run_dir: str, checkpoint: str | None) -> list[str]:
    """The outputs that exist in the run directory: a run stopped by max_iterations (or
    with trainer.test_at_end=false) has no test results, and the summary must not claim any."""
    run = Path(run_dir)
    lines = []
    if (run / RESULTS_FILE).exists() and (run / SCORES_FILE).exists():
        lines.append(f"  {RESULTS_FILE}, {SCORES_FILE}   test results and per-video scores")
    else:
        lines.append("  (no test results: the test did not run)")
    if (run / "metrics.jsonl").exists():
        lines.append(f"  metrics.jsonl, tensorboard/       training curves "
                     f"(tensorboard --logdir {run_dir})")  # fmt: skip
    if checkpoint:
        lines.append(f"  checkpoints/                      latest: {checkpoint}")
    return lines


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    run_dir = HydraConfig.get().runtime.output_dir
    finished = False
    try:
        summary = train(cfg, run_dir)
        finished = True
    except NonFiniteLossError as e:
        logger.error("%s", e)
        sys.exit(EXIT_NON_FINITE)
    except RunInterrupted as e:
        # Non-zero, so that torchrun --max-restarts restarts the job and it resumes by itself.
        logger.error("%s", e)
        sys.exit(e.exit_code)
    except (PretrainedRequiredError, PretrainedSourceError) as e:  # a message, no traceback
        logger.error("videogn-train: %s", e)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        # No barrier after a failure: a peer may be gone, and the barrier would wait for it.
        distributed.shutdown_distributed(synchronize=finished)
    if summary["rank"] == 0:
        logger.info("%s", format_summary(summary, time.perf_counter() - start))


def main() -> None:
    exit_on_bad_overrides(sys.argv[1:], "train")
    hydra_main()


if __name__ == "__main__":
    main()
