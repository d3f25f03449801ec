"""Forward FLOPs per video of the three test protocols: 1 crop, 3 crops, and the full frame.

    python benchmarks/flops_test_views.py [--frames 32] [--clips 10] [--short-side 256]

I3D ResNet-50 (400 classes), torch.utils.flop_counter on the meta device (1 multiply-add =
2 FLOPs), views sized by the engine's own TestTransform: crops of ``--short-side`` pixels (the
Table 8 files' fully convolutional 256 crops), or the whole frame after the short-side
resize. Frame sizes are those of 4:3 (320x240) and 16:9 (640x360) sources.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import videogn
from videogn.data.transforms import TestTransform

SOURCES = {"4:3": (240, 320), "16:9": (360, 640)}


def forward_gflops(frames: int, height: int, width: int) -> float:
    with torch.device("meta"):
        model = videogn.create_model("i3d_r50")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, frames, height, width, device="meta"))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--short-side", type=int, default=256)
    args = parser.parse_args()
    side = args.short_side
    print(f"| test views ({args.clips} clips of {args.frames} frames) | source | view (HxW) "
          "| views | GFLOPs per video | pixels of the frame seen |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, (height, width) in SOURCES.items():
        frame_h, frame_w = TestTransform(short_side=side, num_crops="full").view_size(height, width)
        for crops in (1, 3, "full"):
            transform = TestTransform(short_side=side, crop_size=side, num_crops=crops)
            view_h, view_w = transform.view_size(height, width)
            views = args.clips * transform.views_per_clip
            gflops = views * forward_gflops(args.frames, view_h, view_w)
            covered = min(frame_w, transform.views_per_clip * view_w)
            seen = "all" if covered == frame_w else f"{covered} of {frame_w} columns"
            if crops == 3 and covered == frame_w:
                seen = "all, overlapping"
            label = {1: "1 crop", 3: "3 crops", "full": "full frame"}[crops]
            print(f"| {label} | {name} {width}x{height} | {view_h}x{view_w} | {views} | "
                  f"{gflops:.0f} | {seen} |")  # fmt: skip


if __name__ == "__main__":
    main()
