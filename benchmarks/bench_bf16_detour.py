"""Cost of videogn's float32 weight-gradient detour for bf16 on AVX-512 CPUs (models/conv.py).

One process, one thread, the toy I3D train step (bf16 autocast, channels_last_3d) with the
detour on and off, interleaved step by step; medians of process CPU time. "off" runs oneDNN's
bf16 weight gradient, which is wrong on such CPUs: its time is the reference, not an option.

    python benchmarks/bench_bf16_detour.py [--rounds 15] [--size 8,64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import videogn.models.conv as conv
from videogn.models import create_model


def make_step(frames: int, size: int):
    torch.manual_seed(0)
    model = create_model(
        "i3d_r50",
        norm="gn",
        norm_kwargs={"num_groups": 4},
        base_width=16,
        stage_depths=(1, 1, 1, 1),
        num_classes=400,
    ).to(memory_format=torch.channels_last_3d)
    clip = torch.randn(4, 3, frames, size, size).contiguous(memory_format=torch.channels_last_3d)
    labels = torch.zeros(4, dtype=torch.long)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(clip), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", default="8,64", help="frames,pixels of the clip")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames, size = (int(v) for v in args.size.split(","))
    step = make_step(frames, size)
    detour = conv.cpu_bf16_conv_uses_avx512_kernels
    times = {"detour on": [], "detour off": []}
    for _ in range(args.rounds):
        for name in times:
            conv.cpu_bf16_conv_uses_avx512_kernels = (
                detour if name == "detour on" else lambda: False
            )
            start = time.process_time()
            step()
            times[name].append(time.process_time() - start)
    conv.cpu_bf16_conv_uses_avx512_kernels = detour
    on, off = (statistics.median(times[n][2:]) for n in times)
    print(f"toy I3D (width 16), 4 x 3 x {frames} x {size} x {size}, bf16 channels_last_3d")
    print(f"detour on  {on * 1e3:7.1f} ms/step (CPU time)")
    print(f"detour off {off * 1e3:7.1f} ms/step (wrong gradients on AVX-512 CPUs)")
    print(f"on / off   {on / off:7.2f}")


if __name__ == "__main__":
    main()
