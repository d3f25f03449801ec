"""DataLoader benchmark: clips/s with 1 and 2 workers, and how long a CPU train step waits on data.

1. Throughput: `VideoClipDataset` (32x2 clips, full train transform, one decoder thread per
   worker) over real Kinetics clips, through a DataLoader with 1 and then 2 workers,
   alternating, `--repeats` times; the first batch (worker start-up) is not timed. The ratio
   2 workers / 1 worker needs 2 idle cores: the load average is printed before and after,
   and the workers' CPU time per clip (which load changes far less) shows whether two
   workers slow each other down.
2. Data wait: the toy I3D of the demo config (base width 8, one block per stage, GN) trains
   on the demo dataset at the demo clip size (8x4 clips, 64x64 crops, batch 8) with one torch
   thread; every iteration is split into the time blocked in `next(loader)` and the step.
   The "floor" is the same loop over a dataset that does no work: the loader's own cost of
   handing over a batch (unpickling, shared-memory handles), which no worker count removes.
   Epoch starts (a new loader starts its workers) are reported apart.

    python benchmarks/bench_loader.py [--videos V ...] [--repeats 3] [--step-iters 40]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from videogn.data.dataset import VideoClipDataset
from videogn.data.demo import ensure_demo_dataset
from videogn.data.lists import VideoRecord, read_video_list
from videogn.data.samplers import TrainClipSampler
from videogn.data.transforms import NORMALIZATIONS, TrainTransform, normalize_on_device
from videogn.models.factory import create_model

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"
DEFAULT_VIDEOS = [
    SHARED_VIDEOS / "mmaction2_demo.mp4",
    SHARED_VIDEOS / "decord_flipping_a_pancake.mkv",
]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def clips_per_second(dataset, workers: int, batch_size: int) -> tuple[float, float, float]:
    """(clips/s after the first batch, worker CPU s per clip, cores the workers kept busy).

    Worker CPU time comes from getrusage(RUSAGE_CHILDREN) once the workers have exited; it
    covers every clip (first batch and start-up included). Equal CPU per clip with 1 and 2
    workers means the workers do not slow each other: with 2 free cores, 2x the clips/s.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    it = iter(loader)
    start = time.perf_counter()
    next(it)
    begin, clips = time.perf_counter(), 0
    for batch in it:
        clips += len(batch["clip"])
    end = time.perf_counter()
    del it  # joins the workers, so their CPU time is in RUSAGE_CHILDREN
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return clips / (end - begin), cpu / len(dataset), cpu / (end - start)


def bench_throughput(videos, num_clips: int, batch_size: int, repeats: int, dtype: str) -> None:
    records = [VideoRecord(str(videos[i % len(videos)]), 0) for i in range(num_clips)]
    dataset = VideoClipDataset(
        records,
        sampler=TrainClipSampler(32, 2),
        transform=TrainTransform(output_dtype=dtype),
        decode_threads=1,
    )
    runs = {1: [], 2: []}
    print(f"\nthroughput: {num_clips} clips of 32x2 (224 crops, {dtype} out) from "
          f"{', '.join(Path(v).name for v in videos)}; load average {load_average()}")  # fmt: skip
    for repeat in range(repeats):
        for workers in (1, 2):
            runs[workers].append(clips_per_second(dataset, workers, batch_size))
            rate, cpu, cores = runs[workers][-1]
            print(f"  repeat {repeat}: {workers} worker(s) {rate:.2f} clips/s, worker CPU "
                  f"{cpu * 1e3:.0f} ms per clip, {cores:.2f} cores busy")  # fmt: skip
    one, two = ([statistics.median(v) for v in zip(*runs[w], strict=True)] for w in (1, 2))
    print(f"  median: 1 worker {one[0]:.2f} clips/s, 2 workers {two[0]:.2f} clips/s, ratio "
          f"{two[0] / one[0]:.2f} (target >= 1.8); worker CPU per clip 2 / 1 workers "
          f"{two[1] / one[1]:.2f}; cores busy {one[2]:.2f} / {two[2]:.2f}; "
          f"load average {load_average()}")  # fmt: skip


def demo_dataset(dtype: str) -> VideoClipDataset:
    cache = Path(os.environ.get("VIDEOGN_CACHE") or "~/.cache/videogn").expanduser() / "demo"
    demo = ensure_demo_dataset(cache)
    transform = TrainTransform(scale_range=(64, 76), crop_size=64, flip_p=0.0, output_dtype=dtype)
    return VideoClipDataset(
        read_video_list(demo.train_list, root=demo.root),
        sampler=TrainClipSampler(8, 4),
        transform=transform,
    )


class NoWork(Dataset):
    """Items shaped like the demo dataset's, made for free: the loader's own per-batch cost."""

    def __init__(self, like: VideoClipDataset):
        self.clip, self.size = like[0]["clip"], len(like)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"clip": self.clip.clone(), "label": 0, "index": index}


def data_wait(dataset, workers: int, iters: int, batch_size: int) -> tuple[list, list, list]:
    """Seconds blocked in next(loader) and of the train step per iteration (epoch starts,
    where a new loader starts its workers, apart), and the waits at epoch starts."""
    torch.manual_seed(0)
    model = create_model("i3d_r50", norm="gn", base_width=8, stage_depths=(1, 1, 1, 1),
                         num_classes=8)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )
    waits, steps, epoch_starts = [], [], []
    it = iter(loader)
    while len(steps) < iters + 2:
        begin = time.perf_counter()
        try:
            batch = next(it)
            starting = False
        except StopIteration:
            it = iter(loader)  # a new epoch, new workers (as the engine rebuilds its loader)
            batch = next(it)
            starting = True
        fetched = time.perf_counter()
        clips = batch["clip"]
        if clips.dtype == torch.uint8:
            clips = normalize_on_device(clips, *NORMALIZATIONS["torchvision"])
        loss = torch.nn.functional.cross_entropy(model(clips), batch["label"].clamp(max=7))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if starting:
            epoch_starts.append(fetched - begin)
        else:
            waits.append(fetched - begin)
            steps.append(time.perf_counter() - fetched)
    # The first batches include worker start-up, like an epoch start.
    return waits[2:], steps[2:], epoch_starts + waits[:2]


def bench_data_wait(iters: int, batch_size: int, dtype: str) -> None:
    dataset = demo_dataset(dtype)
    print(f"\ndata wait of the demo train step (toy I3D-GN, 8x4 clips 64x64, batch {batch_size}, "
          f"{dtype} out); load average {load_average()}")  # fmt: skip
    for workers in (1, 2):
        waits, steps, starts = data_wait(dataset, workers, iters, batch_size)
        floor = statistics.median(data_wait(NoWork(dataset), workers, iters, batch_size)[0])
        waiting = sum(w - floor > 0.01 * s for w, s in zip(waits, steps, strict=True))
        start_waits = ", ".join(f"{w * 1e3:.0f}" for w in starts)
        print(f"  {workers} worker(s): step median {statistics.median(steps) * 1e3:.0f} ms; "
              f"wait median {statistics.median(waits) * 1e3:.1f} ms (floor {floor * 1e3:.1f} ms), "
              f"max {max(waits) * 1e3:.1f} ms, {sum(waits) / sum(steps):.1%} of step time; "
              f"iterations waiting > floor + 1% of a step: {waiting} of {len(steps)}; "
              f"epoch starts (new workers) wait {start_waits} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=[str(p) for p in DEFAULT_VIDEOS])
    parser.add_argument("--clips", type=int, default=24, help="clips per throughput run")
    parser.add_argument("--batch-size", type=int, default=2, help="throughput batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-iters", type=int, default=40)
    parser.add_argument("--output-dtype", choices=("float32", "uint8"), default="float32")
    parser.add_argument("--only", choices=("throughput", "wait"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"cores {os.cpu_count()}, torch threads 1 (main and workers), decode threads 1")
    if args.only in (None, "throughput"):
        bench_throughput(args.videos, args.clips, args.batch_size, args.repeats, args.output_dtype)
    if args.only in (None, "wait"):
        bench_data_wait(args.step_iters, 8, args.output_dtype)
        print(f"  load average {load_average()}")


if __name__ == "__main__":
    main()
