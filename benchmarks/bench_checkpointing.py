"""Activation checkpointing on the CPU: step time and memory per clip, with and without.

    python benchmarks/bench_checkpointing.py                  # full-width I3D-R50, 1 thread
    python benchmarks/bench_checkpointing.py --clip 2 16 112 --rounds 3 --norms gn

A step is forward + cross-entropy + backward + SGD (momentum 0.9) on the full-width I3D-R50,
fp32. The settings (none, res2, all) of one norm start from the same weights and clip and are
timed round-robin, so load from other processes hits them alike; ratios are of medians of
process CPU time against "none". The FLOP ratio is the planner's estimate of the extra
compute (videogn.memory.checkpointing.recompute_overhead). Memory per clip: the step's peak
by the CPU allocator (torch.profiler) at batch 1 and 2 of the same clip length, and the
planner's estimate of it (CPU autocast policy, meta tensors).
"""

from __future__ import annotations

import argparse

import torch
from bench_memory import peak_rows
from bench_step import time_round_robin
from torch.nn import functional as F

from videogn.memory.checkpointing import recompute_overhead
from videogn.models import create_model
from videogn.models.i3d import CHECKPOINT_STAGES

SETTINGS = {"none": (), "res2": ("res2",), "all": CHECKPOINT_STAGES}


def build_step(norm: str, stages, clip_shape):
    torch.manual_seed(0)
    model = create_model("i3d_r50", norm=norm, activation_checkpointing=stages).train()
    clip = torch.randn(clip_shape)
    labels = torch.zeros(clip_shape[0], dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        loss = F.cross_entropy(model(clip), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def time_rows(norms, clip_shape, rounds: int) -> None:
    batch, frames, crop = clip_shape
    print(f"\n### step time, I3D-R50 fp32, {batch} clips of {frames}x{crop}, median of {rounds}\n")
    print("| norm | checkpointing | CPU s | / none | planner's extra FLOPs |")
    print("| --- | --- | --- | --- | --- |")
    for norm in norms:
        steps = {}
        for name, stages in SETTINGS.items():
            steps[name] = build_step(norm, stages, (batch, 3, frames, crop, crop))
            steps[name]()  # warm-up
        times = time_round_robin(steps, rounds)
        for name, stages in SETTINGS.items():
            flops = recompute_overhead({"name": "i3d_r50", "norm": norm}, frames, crop, stages)
            ratio = times[name][0] / times["none"][0]
            print(f"| {norm} | {name} | {times[name][0]:.2f} | {ratio:.3f} | +{flops:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norms", nargs="+", default=["bn", "gn"])
    parser.add_argument("--clip", type=int, nargs=3, default=[2, 16, 112], help="batch T crop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-frames", type=int, default=32, help="clip length, memory")
    parser.add_argument("--memory-crop", type=int, default=224)
    parser.add_argument("--no-memory", action="store_true", help="step times only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    time_rows(args.norms, tuple(args.clip), args.rounds)
    if not args.no_memory:
        peak_rows(args.norms, args.memory_frames, (1, 2), args.memory_crop, list(SETTINGS))


if __name__ == "__main__":
    main()
