"""Read what a training run left in its directory: its cell, its outcome, its test numbers.

A run directory (what ``videogn-train`` writes) holds ``config.yaml`` (the resolved config),
``results.json`` after the test, ``metrics.jsonl`` and ``checkpoints/``. A run that crashed,
was stopped or went non-finite has no ``results.json``; it is reported as such, never as a
zero.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from videogn.engine.checkpoint import CHECKPOINT_DIR
from videogn.engine.evaluate import RESULTS_FILE
from videogn.engine.run import RESOLVED_CONFIG
from videogn.models.pretrained_sources import is_scratch

# The engine's log line: "batch 64 clips (8 per process x 8 processes x 1 accumulation), ..."
BATCH_LINE = re.compile(r"batch (\d+) clips \((\d+) per process x (\d+) processes x (\d+) accum")


@dataclass
class RunRecord:
    """One run directory, as found.

    ``status`` is "done" (tested), "failed" (an error, or no video could be tested) or
    "incomplete" (checkpoints but no test yet: still running, stopped or preempted).
    """

    run_dir: Path
    status: str
    norm: str
    clip: str
    batch: int
    seed: int
    name: str
    pretrained: str | None
    dataset: str = ""
    base_width: int = 64
    top1: float | None = None
    top5: float | None = None
    clip_top1: float | None = None
    videos_evaluated: int | None = None
    videos_listed: int | None = None
    iterations: int | None = None
    total_batch: int | None = None
    world_size: int | None = None
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.norm, self.clip, self.batch)


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories among ``paths``: each path is a run dir or a folder holding some."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (expected a run or sweep directory)")
        if (path / RESOLVED_CONFIG).is_file():
            found.append(path)
            continue
        nested = sorted(p.parent for p in path.rglob(RESOLVED_CONFIG) if ".hydra" not in p.parts)
        if not nested:
            raise FileNotFoundError(
                f"{path} holds no run directory (no {RESOLVED_CONFIG} below it); "
                "give the directories videogn-train wrote"
            )
        found.extend(nested)
    return list(dict.fromkeys(found))


def _last_iteration(run_dir: Path) -> int | None:
    checkpoints = sorted((run_dir / CHECKPOINT_DIR).glob("iter_*.pt"))
    if not checkpoints:
        return None
    return int(checkpoints[-1].stem.split("_")[-1])


def _first_error(run_dir: Path) -> str | None:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("phase") == "error":
            return str(record.get("error", "error")).splitlines()[0]
    return None


def _batch_from_log(run_dir: Path) -> tuple[int, int] | None:
    """(total batch, world size) from the engine's log line, if the log is there."""
    for log in sorted(run_dir.glob("*.log")):
        match = BATCH_LINE.search(log.read_text(encoding="utf-8", errors="replace"))
        if match:
            return int(match.group(1)), int(match.group(3))
    return None


def read_run(run_dir: str | Path) -> RunRecord:
    """What one run directory says about itself."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / RESOLVED_CONFIG)
    batch = cfg.data.batch_size
    record = RunRecord(
        run_dir=run_dir,
        status="incomplete",
        norm=str(cfg.norm.name),
        clip=f"{cfg.sampler.num_frames}x{cfg.sampler.frame_interval}",
        batch=int(batch) if str(batch).isdigit() else -1,
        seed=int(cfg.seed),
        name=str(cfg.name),
        pretrained=None if is_scratch(cfg.model.pretrained) else cfg.model.pretrained,
        dataset=str(cfg.data.name),
        base_width=int(cfg.model.base_width),
        iterations=_last_iteration(run_dir),
    )
    logged = _batch_from_log(run_dir)
    if logged:
        record.total_batch, record.world_size = logged
    results_path = run_dir / RESULTS_FILE
    if results_path.is_file():
        results = json.loads(results_path.read_text(encoding="utf-8"))
        record.videos_evaluated = results.get("videos_evaluated")
        record.videos_listed = results.get("videos_listed")
        if "video_top1" in results:
            record.status = "done"
            record.top1, record.top5 = results["video_top1"], results["video_top5"]
            record.clip_top1 = results.get("clip_top1")
        else:
            record.status, record.reason = "failed", "no video could be tested"
        return record
    error = _first_error(run_dir)
    if error:
        record.status, record.reason = "failed", error
    elif record.iterations is None:
        record.status, record.reason = "failed", "no checkpoint and no results (see its log)"
    else:
        record.reason = f"no test results; last checkpoint at iteration {record.iterations}"
    return record


def read_runs(paths: list[str | Path]) -> list[RunRecord]:
    return [read_run(d) for d in find_run_dirs(paths)]
