"""Estimated activation memory against an independent measurement of real CPU steps.

    python benchmarks/bench_memory.py                      # I3D-R50, 32 and 64 x 224, batch 1-2
    python benchmarks/bench_memory.py --frames 32 --batches 1 --norms gn
    python benchmarks/bench_memory.py --peak --frames 32 --checkpointing none res2 all

Estimate: videogn.memory (meta tensors, storage lifetimes followed by a dispatch mode).
Measurement (videogn.memory.measure), on real tensors of the full model:
  - allocator: torch.profiler(profile_memory=True) logs of the CPU allocator; the bytes
    allocated in forward and still alive after it, the input batch included;
  - saved list: autograd's saved_tensors_hooks, distinct storages summed (parameters and
    buffers left out; the input counts only where an op saved it).
Both are held against the estimator's bytes alive after forward (what backward needs).
"""

from __future__ import annotations

import argparse
import time

import torch

from videogn.memory.estimate import GIB, build_meta_model, estimate_module_memory, simulate_step
from videogn.memory.measure import measure_cpu_step
from videogn.models import create_model


def measure_rows(norms, frames_list, batches, crop, dtype):
    """One row per (norm, frames, batch): estimated vs measured bytes held after forward."""
    rows = []
    for norm in norms:
        torch.manual_seed(0)
        model = create_model("i3d_r50", norm=norm).train()
        meta_model = build_meta_model({"name": "i3d_r50", "norm": norm})
        for frames in frames_list:
            for batch in batches:
                clip_shape = (3, frames, crop, crop)
                # CPU autocast has its own op lists; compare like with like.
                estimated = simulate_step(
                    meta_model, batch, clip_shape, dtype=dtype, autocast_policy="cpu"
                ).forward_held_bytes
                start = time.perf_counter()
                measured = measure_cpu_step(model, torch.randn(batch, *clip_shape), dtype=dtype)
                seconds = time.perf_counter() - start
                rows.append(
                    dict(
                        norm=norm,
                        frames=frames,
                        batch=batch,
                        estimated=estimated,
                        allocator=measured.forward_held_bytes,
                        saved=measured.saved_tensor_bytes,
                        seconds=seconds,
                    )
                )
                print(
                    f"  measured {norm} {frames}x{crop} batch {batch} in {seconds:.1f} s",
                    flush=True,
                )
    return rows


def per_clip(rows, key, norm, frames):
    """Bytes per clip: slope between the smallest and largest batch (or the total at one)."""
    cell = {r["batch"]: r[key] for r in rows if r["norm"] == norm and r["frames"] == frames}
    low, high = min(cell), max(cell)
    if low == high:
        return cell[low] / low
    return (cell[high] - cell[low]) / (high - low)


def print_tables(rows, norms, frames_list, crop, dtype) -> None:
    print(f"\n### Bytes held after forward, I3D-R50 {dtype}, GiB\n")
    print("| norm | clip | batch | estimated | allocator | saved list | est - allocator (bytes) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        error = r["estimated"] - r["allocator"]
        print(
            f"| {r['norm']} | {r['frames']}x{crop} | {r['batch']} | "
            f"{r['estimated'] / GIB:.4f} | {r['allocator'] / GIB:.4f} | "
            f"{r['saved'] / GIB:.4f} | {error:+d} ({error / r['allocator']:+.4%}) |"
        )
    print("\n### Per clip, GiB (64/32 ratio from the same figures)\n")
    print("| norm | clip | estimated | allocator | saved list |")
    print("| --- | --- | --- | --- | --- |")
    for norm in norms:
        for frames in frames_list:
            figures = [
                per_clip(rows, k, norm, frames) / GIB for k in ("estimated", "allocator", "saved")
            ]
            print(f"| {norm} | {frames}x{crop} | " + " | ".join(f"{f:.4f}" for f in figures) + " |")
        if 32 in frames_list and 64 in frames_list:
            ratios = [
                per_clip(rows, k, norm, 64) / per_clip(rows, k, norm, 32)
                for k in ("estimated", "allocator", "saved")
            ]
            print(f"| {norm} | 64/32 ratio | " + " | ".join(f"{x:.3f}" for x in ratios) + " |")


def print_estimates(norms, frames_list, crop, dtypes) -> None:
    """The planner's figures: peak per clip vs held per clip, meta only (CUDA autocast policy)."""
    print("\n### Estimator (CUDA policy): peak over the step vs held after forward, per clip\n")
    print("| norm | clip | dtype | peak GiB/clip | held GiB/clip | peak/held | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for norm in norms:
        for frames in frames_list:
            for dtype in dtypes:
                start = time.perf_counter()
                model = build_meta_model({"name": "i3d_r50", "norm": norm})
                e = estimate_module_memory(model, (3, frames, crop, crop), dtype=dtype)
                seconds = time.perf_counter() - start
                print(
                    f"| {norm} | {frames}x{crop} | {dtype} | {e.bytes_per_clip / GIB:.4f} | "
                    f"{e.saved_bytes_per_clip / GIB:.4f} | "
                    f"{e.bytes_per_clip / e.saved_bytes_per_clip:.4f} | {seconds:.1f} |"
                )


def peak_rows(norms, frames, batches, crop, checkpointings) -> None:
    """Per-clip peak of a whole training step (forward + loss + backward), estimated (CPU
    policy, meta tensors) against the CPU allocator's peak, with activation checkpointing."""
    low, high = min(batches), max(batches)
    print(f"\n### Step peak per clip (batch {low} -> {high}), I3D-R50 {frames}x{crop} fp32\n")
    print("| norm | checkpointing | estimated GiB/clip | measured GiB/clip | est / measured |")
    print("| --- | --- | --- | --- | --- |")
    for norm in norms:
        for setting in checkpointings:
            stages = (
                () if setting == "none" else setting if setting == "all" else setting.split(",")
            )
            kwargs = {"name": "i3d_r50", "norm": norm, "activation_checkpointing": stages}
            torch.manual_seed(0)
            model = create_model(**kwargs).train()
            meta_model = build_meta_model(kwargs)
            clip_shape = (3, frames, crop, crop)
            estimated, measured = {}, {}
            for batch in (low, high):
                estimated[batch] = simulate_step(
                    meta_model, batch, clip_shape, autocast_policy="cpu"
                ).peak_bytes
                clip = torch.randn(batch, *clip_shape)
                measured[batch] = measure_cpu_step(model, clip, backward=True).peak_bytes
            e = (estimated[high] - estimated[low]) / (high - low) / GIB
            m = (measured[high] - measured[low]) / (high - low) / GIB
            print(f"| {norm} | {setting} | {e:.4f} | {m:.4f} | {e / m:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norms", nargs="+", default=["bn", "gn"])
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--dtype", default="fp32", help="fp32, or bf16 for real CPU autocast")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--peak",
        action="store_true",
        help="only the step's peak per clip, with --checkpointing settings (first --frames)",
    )
    parser.add_argument(
        "--checkpointing", nargs="+", default=["none", "all"], help="none, all or res2,res3"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak:
        peak_rows(args.norms, args.frames[0], args.batches, args.crop, args.checkpointing)
        return
    print_estimates(args.norms, args.frames, args.crop, ["fp32", "bf16"])
    print(f"\nReal CPU forward passes ({args.threads} thread(s)):")
    rows = measure_rows(args.norms, args.frames, args.batches, args.crop, args.dtype)
    print_tables(rows, args.norms, args.frames, args.crop, args.dtype)


if __name__ == "__main__":
    main()
