"""Did a training run train? Reads RUN_DIR/metrics.jsonl: the iterations logged, every loss
finite, the loss falling (mean of the last ten logged losses below the first ten), the
throughput; prints one JSON object and exits 1 when a check fails.

    python benchmarks/gpu/check_train.py RUN_DIR --iterations 100 [--name train] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from videogn.engine.metrics import read_metrics


def summarize(run_dir: Path, iterations: int, name: str) -> dict:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return {"name": name, "ok": False, "error": f"{metrics} does not exist"}
    records = read_metrics(metrics, "train")
    losses = [r["loss"] for r in records]
    window = max(1, min(10, len(losses) // 3))
    first = statistics.fmean(losses[:window]) if losses else math.nan
    last = statistics.fmean(losses[-window:]) if losses else math.nan
    steps = records[-1]["step"] if records else 0
    speeds = [r["clips_per_s"] for r in records[len(records) // 2 :] if "clips_per_s" in r]
    checks = {
        "iterations": steps >= iterations,
        "finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "loss_falls": last < first,
    }
    return {
        "name": name,
        "ok": all(checks.values()),
        "checks": checks,
        "iterations": steps,
        "loss_first": first,
        "loss_last": last,
        "clips_per_s_median": statistics.median(speeds) if speeds else None,
        "run_dir": str(run_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--name", default="train")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    summary = summarize(args.run_dir, args.iterations, args.name)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
