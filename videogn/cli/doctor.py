"""videogn-doctor: what this machine runs videogn with, and how fast.

videogn-doctor                                   # environment report and warnings
videogn-doctor --data train.txt --root /data/k400_256/train   # decode a sample of a list
videogn-doctor --bench --device cpu --quick      # toy-sized bench for a small CPU (minutes)
videogn-doctor --bench --device cuda --json out.json --markdown out.md   # the full bench
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from videogn.doctor import bench, loading, report
from videogn.doctor.environment import collect_environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogn-doctor", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", metavar="LIST", help="decode a sample of this video list")
    parser.add_argument("--root", help="folder the list's relative paths are under")
    parser.add_argument("--sample", type=int, default=32, help="videos of --data to decode")
    parser.add_argument("--workers", type=int, default=2, help="loader workers for --data")
    parser.add_argument("--backend", default="pyav", help="decoder for --data (pyav, decord)")
    parser.add_argument("--bench", action="store_true", help="time the Table 8 train steps")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if available")
    parser.add_argument("--quick", action="store_true", help="toy sizes for a 2-core CPU")
    parser.add_argument("--json", metavar="PATH", help="write the whole report as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    parser.add_argument("--videos-dir", help="where --bench writes its generated videos")
    return parser


def run_bench(args, device: torch.device, out: dict) -> None:
    size = bench.QUICK if args.quick else bench.FULL
    if device.type == "cpu" and args.quick:
        # Two threads fighting other processes for two cores stall for seconds at a time: one
        # thread gives step times that mean something on a small shared machine.
        torch.set_num_threads(1)
    out["bench"] = {"device": str(device), "size": "quick" if args.quick else "full"}
    print(f"\nTrain steps on {device} ({out['bench']['size']}):", flush=True)
    start = time.perf_counter()
    steps = bench.bench_cells(device, size, log=lambda line: print(line, flush=True))
    out["steps"] = [s.as_dict() for s in steps]
    out["bench"]["steps_s"] = round(time.perf_counter() - start, 1)
    print("\n".join(report.steps_table(out["steps"])))
    if device.type == "cuda":
        frames = 32 // size.frame_divisor
        out["batch_probe"] = [
            bench.cuda_batch_probe(size, norm, frames, "bf16") for norm in ("bn", "gn")
        ]
        for probe in out["batch_probe"]:
            print(f"batch probe {probe['norm']}: {probe['describe']}")
    demand = max(s["clips_per_s"] for s in out["steps"] if s["batch"] == 8)
    run_loader_bench(args, demand, out)


def run_loader_bench(args, demand: float, out: dict) -> None:
    videos_dir = Path(args.videos_dir or tempfile.mkdtemp(prefix="videogn_doctor_"))
    count, frames, passes = (3, 72, 2) if args.quick else (16, 80, 2)
    print(f"\nDataLoader on {count} generated 256-px videos in {videos_dir}:", flush=True)
    records = loading.generate_videos(videos_dir, count, frames=frames)
    workers = loading.worker_counts(2 if args.quick else None)
    out["loader"] = loading.loader_throughput(records, workers, demand, passes)
    print("\n".join(report.loader_table(out["loader"])))


def run_data_check(args, out: dict) -> None:
    print(f"\nDecoding a sample of {args.data}:", flush=True)
    result = loading.check_list(
        args.data, args.root, sample=args.sample, workers=args.workers, backend=args.backend
    )
    out["data"] = result
    print(
        f"{result['decoded']}/{result['sampled']} decoded (of {result['listed']} listed), "
        f"{result['clips_per_s']:.2f} clips/s with {result['workers']} workers "
        f"({result['clips_per_s_per_worker']:.2f} per worker)"
    )
    for path, reason in result["failures"]:
        print(f"  FAILED {path}: {reason}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("videogn-doctor: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    out = {"environment": collect_environment()}
    print("\n".join(report.environment_lines(out["environment"])), flush=True)
    if args.data:
        run_data_check(args, out)
    if args.bench:
        run_bench(args, device, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    if args.markdown:
        Path(args.markdown).write_text(report.to_markdown(out))
    failed = out.get("data", {}).get("failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
