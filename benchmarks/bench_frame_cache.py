"""data.frame_cache: what decoding each video once saves a mini Table 8 run.

Two measurements, side by side on the same machine, alternating so load drifts hit both:
1. the training dataset alone (the real sampler, decoder and transform of the take-3 cell
   ``mini_table8/bn_32x2_bs8``): clips per second without the cache and from a warm directory
   cache, over the same items;
2. a whole ``videogn-train`` run of that cell cut at ``--iterations`` (no test), one process,
   one thread: wall seconds without and with the (warm) cache.

    python benchmarks/bench_frame_cache.py --task-root ~/.cache/videogn/flicker_<hash> \
        --pretrained ~/.cache/videogn/pretrain2d_<hash>/i3d_bn.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from videogn.data.dataset import VideoClipDataset
from videogn.data.frame_cache import FrameCache
from videogn.data.samplers import TrainClipSampler
from videogn.data.transforms import TrainTransform
from videogn.engine.builders.data import read_records


def dataset_rate(root: Path, cache: FrameCache | None, items: int) -> float:
    records = read_records(str(root / "train.txt"), str(root), 8)[:items]
    records += read_records(str(root / "val.txt"), str(root), 8)[: max(0, items - len(records))]
    dataset = VideoClipDataset(
        records,
        sampler=TrainClipSampler(32, 2),
        transform=TrainTransform(scale_range=(40, 48), crop_size=40, flip_p=0.0),
        frame_cache=cache,
    )
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - start)


def run_seconds(root: Path, pretrained: str, cache: str, iterations: int, out: Path) -> float:
    command = [
        sys.executable, "-m", "videogn.cli.train", "experiment=mini_table8/bn_32x2_bs8",
        f"data.root={root}", f"data.frame_cache={cache}", f"model.pretrained={pretrained}",
        f"trainer.max_iterations={iterations}",
        f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-root", type=Path, required=True)
    parser.add_argument("--pretrained", required=True, help="the inflated BN I3D of the study")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        # warm the cache with every training video, so "cached" runs never decode
        dataset_rate(args.task_root, FrameCache(folder), items=10**9)
        rates = {"uncached": [], "cached": []}
        seconds = {"uncached": [], "cached": []}
        for r in range(args.rounds):
            rates["uncached"].append(dataset_rate(args.task_root, None, args.items))
            rates["cached"].append(dataset_rate(args.task_root, FrameCache(folder), args.items))
            for name, cache in (("uncached", "null"), ("cached", str(folder))):
                out = Path(tmp) / f"{name}_{r}"
                seconds[name].append(
                    run_seconds(args.task_root, args.pretrained, cache, args.iterations, out)
                )
    for name in rates:
        print(
            f"{name:9s} dataset {statistics.median(rates[name]):6.1f} clips/s   "
            f"run of {args.iterations} iterations {statistics.median(seconds[name]):6.1f} s"
        )
    speedup = statistics.median(seconds["uncached"]) / statistics.median(seconds["cached"])
    data = statistics.median(rates["cached"]) / statistics.median(rates["uncached"])
    print(f"speed-up: dataset {data:.2f}x, whole run {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
