"""Model figures: params, forward GFLOPs, and CPU forward+backward time per clip.

    python benchmarks/bench_model.py --frames 32 --size 224 --repeats 3

FLOPs are torch.utils.flop_counter counts (1 multiply-add = 2 FLOPs), forward only.
Times are medians over ``--repeats`` after one warm-up, with BN and GN measured side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import videogn


def forward_gflops(frames: int, size: int) -> float:
    with torch.device("meta"):
        model = videogn.create_model("i3d_r50")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, frames, size, size, device="meta"))
    return counter.get_total_flops() / 1e9


def train_step_seconds(norm: str, frames: int, size: int, batch: int, repeats: int) -> float:
    model = videogn.create_model("i3d_r50", norm=norm).train()
    clips = torch.randn(batch, 3, frames, size, size)
    labels = torch.zeros(batch, dtype=torch.long)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(clips), labels).backward()
        if i:  # the first step pays for allocator warm-up
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with torch.device("meta"):
        params = sum(p.numel() for p in videogn.create_model("i3d_r50").parameters())
    print(f"I3D-R50, 400 classes: {params / 1e6:.3f} M parameters")
    for frames in (32, 64):
        print(f"forward at {frames}x{args.size}: {forward_gflops(frames, args.size):.2f} GFLOPs")
    print(f"fwd+bwd, batch {args.batch}, {args.frames}x{args.size}, {args.threads} threads:")
    timings = {
        n: train_step_seconds(n, args.frames, args.size, args.batch, args.repeats)
        for n in ("bn", "gn")
    }
    for norm, seconds in timings.items():
        print(f"  {norm}: {seconds:.2f} s")
    print(f"  gn/bn ratio: {timings['gn'] / timings['bn']:.2f}")


if __name__ == "__main__":
    main()
