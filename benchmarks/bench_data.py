"""Data-path benchmark: train clips and 10-clip test views against decode-only and naive paths.

Single process, one thread, medians over interleaved runs (every method sees the same clips in
the same round, so machine load hits them alike). Ratios are against the decode-only cost of
the frames a clip needs: decode from the keyframe before its first frame to its last frame,
no RGB conversion, no frame skipping. Times are CPU seconds of this process by default
(`--clock cpu`: all its threads, so decord's decoding thread counts), which a busy shared
machine disturbs far less than wall time; `--clock wall` for an idle machine.

    python benchmarks/bench_data.py [VIDEO] [--iters 20] [--clock cpu|wall] [--no-malloc-tuning]

VIDEO defaults to ../shared/videos/mmaction2_demo.mp4 beside the checkout.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch

from videogn.data.dataset import VideoTestDataset
from videogn.data.decoders import open_video
from videogn.data.lists import VideoRecord
from videogn.data.malloc import retain_freed_memory
from videogn.data.samplers import TestClipSampler, TrainClipSampler
from videogn.data.transforms import TestTransform, TrainTransform

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "videos" / "mmaction2_demo.mp4"
TRAIN_TARGET, TEST_TARGET = 1.3, 1.25
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


class DecodeOnly:
    """Pure decoding from in-memory packets with a fresh decoder: the lower bound."""

    def __init__(self, path: Path):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            self.codec_name = stream.codec_context.name
            self.extradata = stream.codec_context.extradata
            self.packets = [p for p in container.demux(stream) if p.size > 0]
        order = sorted(p.pts for p in self.packets)
        self.frame_of_pts = {pts: i for i, pts in enumerate(order)}
        self.keyframes = sorted(
            (self.frame_of_pts[p.pts], i) for i, p in enumerate(self.packets) if p.is_keyframe
        )

    def __call__(self, first: int, last: int) -> int:
        """Decode every frame from the keyframe before `first` until `last` is out."""
        start = max(pos for frame, pos in self.keyframes if frame <= first)
        codec = av.CodecContext.create(self.codec_name, "r")
        codec.extradata = self.extradata
        codec.thread_count = 1
        decoded = 0
        for packet in self.packets[start:] + [None]:
            for frame in codec.decode(packet):
                decoded += 1
                if self.frame_of_pts[frame.pts] >= last:
                    return decoded
        return decoded


def naive_clip(path: Path, indices: np.ndarray) -> np.ndarray:
    """Open, decode from the start, convert the needed frames (a per-clip open and scan)."""
    wanted = {int(i) for i in indices}
    frames = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for number, frame in enumerate(container.decode(stream)):
            if number in wanted:
                frames[number] = frame.to_ndarray(format="rgb24")
            if number >= indices.max():
                break
    return np.stack([frames[int(i)] for i in indices])


def decord_clip(path: Path, indices: np.ndarray) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(np.unique(indices).tolist()).asnumpy()


def ours_uint8(path: Path, indices) -> np.ndarray:
    with open_video(path, threads=1) as video:
        return video.decode(np.concatenate(indices) if isinstance(indices, list) else indices)


def run_round_robin(methods: dict, cases: list, iters: int) -> dict[str, float]:
    """Median seconds per call of each method; one pass over all methods per case."""
    times = {name: [] for name in methods}
    for i in range(iters):
        case = cases[i % len(cases)]
        for name, method in methods.items():
            begin = clock()
            method(case)
            times[name].append(clock() - begin)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(title: str, medians: dict[str, float], baseline: str, unit: str) -> None:
    print(f"\n{title}")
    print(f"  {'path':<34}{'median ms':>11}{unit:>12}{'x ' + baseline:>22}")
    for name, seconds in medians.items():
        rate = 1.0 / seconds
        ratio = seconds / medians[baseline]
        print(f"  {name:<34}{seconds * 1e3:>11.1f}{rate:>12.1f}{ratio:>22.2f}")


def bench_train(path: Path, num_frames: int, interval: int, iters: int, total: int, fps: float):
    sampler = TrainClipSampler(num_frames, interval)
    transform = TrainTransform()
    rng = np.random.default_rng(0)
    cases = [sampler(total, rng) for _ in range(iters)]
    decode_only = DecodeOnly(path)
    transform_rng = np.random.default_rng(1)
    methods = {
        "decode-only (needed span)": lambda c: decode_only(int(c[0]), int(c[-1])),
        "videogn uint8": lambda c: ours_uint8(path, c),
        "videogn + train transform": lambda c: transform(ours_uint8(path, c), transform_rng),
        "naive (decode from start)": lambda c: naive_clip(path, c),
        "decord get_batch (MMAction2)": lambda c: decord_clip(path, c),
    }
    medians = run_round_robin(methods, cases, iters)
    print_table(f"train clip {num_frames}x{interval} ({iters} clips)", medians,
                "decode-only (needed span)", "clips/s")  # fmt: skip
    return medians


def bench_test(path: Path, iters: int, total: int, fps: float):
    sampler = TestClipSampler(32, 2, num_clips=10)
    clips = sampler(total)
    decode_only = DecodeOnly(path)
    first, last = int(min(c.min() for c in clips)), int(max(c.max() for c in clips))
    record = [VideoRecord(str(path), 0)]
    one_crop = VideoTestDataset(record, sampler=sampler, transform=TestTransform(crop_size=224))
    three_crops = VideoTestDataset(
        record, sampler=sampler, transform=TestTransform(crop_size=256, num_crops=3)
    )

    methods = {
        "decode-only (needed span)": lambda _: decode_only(first, last),
        "videogn uint8 (one pass)": lambda _: ours_uint8(path, clips),
        "videogn views 10x1x224": lambda _: one_crop[0],
        "videogn views 10x3x256": lambda _: three_crops[0],
        "naive (10 opens, from start)": lambda _: [naive_clip(path, c) for c in clips],
        "decord get_batch (MMAction2)": lambda _: decord_clip(path, np.concatenate(clips)),
    }
    medians = run_round_robin(methods, [None], iters)
    print_table(f"10-clip test, 32x2 ({iters} videos)", medians, "decode-only (needed span)",
                "videos/s")  # fmt: skip
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", default=str(DEFAULT_VIDEO))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument(
        "--no-malloc-tuning", action="store_true", help="skip videogn.data.malloc (as in workers)"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(1)
    tuned = not args.no_malloc_tuning and retain_freed_memory()
    path = Path(args.video)
    with open_video(path) as video:
        info = video.info()
    print(f"video: {path.name}  {info.width}x{info.height}, {info.num_frames} frames, "
          f"{info.fps:.2f} fps, keyframes {list(info.keyframes)}")  # fmt: skip
    print(f"torch threads 1, decode threads 1, clock {args.clock}, malloc tuning {tuned}")

    decode_only = DecodeOnly(path)
    full = run_round_robin({"full": lambda _: decode_only(0, info.num_frames - 1)}, [None], 5)
    print(f"\ndecode-only limit: {info.num_frames / full['full']:.0f} frames/s "
          f"(whole video in {full['full'] * 1e3:.1f} ms, no RGB conversion)")  # fmt: skip

    summary = []
    for num_frames, interval in ((32, 2), (64, 1)):
        medians = bench_train(path, num_frames, interval, args.iters, info.num_frames, info.fps)
        base = medians["decode-only (needed span)"]
        summary.append(
            (f"train {num_frames}x{interval} uint8", medians["videogn uint8"] / base, TRAIN_TARGET)
        )
        summary.append((f"train {num_frames}x{interval} + transform",
                        medians["videogn + train transform"] / base, TRAIN_TARGET))  # fmt: skip
    medians = bench_test(path, args.iters, info.num_frames, info.fps)
    base = medians["decode-only (needed span)"]
    summary.append(("test 10 clips uint8", medians["videogn uint8 (one pass)"] / base, TEST_TARGET))
    summary.append(
        ("test 10 clips + 10x1x224 views", medians["videogn views 10x1x224"] / base, TEST_TARGET)
    )

    print("\nratio to decode-only of the needed frames (target)")
    for name, ratio, target in summary:
        verdict = "meets" if ratio <= target else "misses"
        print(f"  {name:<34}{ratio:>6.2f}  (<= {target}: {verdict})")


if __name__ == "__main__":
    main()
