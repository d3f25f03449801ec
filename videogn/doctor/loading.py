"""The data side: clips/s through the real loader, per worker, against what a step consumes.

``loader_throughput`` times ``VideoClipDataset`` (32x2 sampler, train transform to uint8 224
crops, as training runs it) in a ``DataLoader`` at several worker counts. ``check_list``
decodes a sample of a user's list the same way and reports the failures with their reasons.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from videogn.data.dataset import TooManyBadVideos, VideoClipDataset
from videogn.data.lists import VideoRecord, read_video_list
from videogn.data.samplers import TrainClipSampler
from videogn.data.transforms import TrainTransform
from videogn.data.video_writer import write_video


def generate_videos(out_dir: Path, count: int, *, frames: int, short_side: int = 256) -> list:
    """``count`` H.264 videos of ``frames`` frames at short_side x 4/3 short_side: smooth
    gradients and a moving square, so the decoder does the work of real footage."""
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = short_side, (short_side * 4 // 3) // 2 * 2
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    records = []
    for index in range(count):
        path = out_dir / f"video_{short_side}_{frames}_{index}.mp4"
        if not path.exists():
            rng = np.random.default_rng(index)
            tilt = rng.uniform(-0.5, 0.5, size=3)
            video = []
            for t in range(frames):
                frame = 100 + (yy[..., None] + xx[..., None] * tilt + 2 * t) % 120
                top, left = (7 * t) % (height - 40), (11 * t) % (width - 40)
                frame[top : top + 40, left : left + 40] = rng.uniform(0, 255, size=3)
                video.append(frame.astype(np.uint8))
            write_video(path, video, fps=25)
        records.append(VideoRecord(str(path), index % 4))
    return records


def training_dataset(records, *, num_frames=32, frame_interval=2, crop_size=224, backend="pyav"):
    """The training path: 32x2 clips, scale jitter 256-320, 224 crops as uint8."""
    scale = (crop_size * 8 // 7, crop_size * 10 // 7)  # 256-320 at 224
    return VideoClipDataset(
        records,
        sampler=TrainClipSampler(num_frames, frame_interval),
        transform=TrainTransform(scale, crop_size, output_dtype="uint8"),
        backend=backend,
        decode_threads=1,
        max_retries=0,
        max_substitutions=0,
        max_failure_fraction=1.0,
    )


class _Checked(Dataset):
    """Each item of ``dataset`` or the reason it failed, so one bad video does not stop a check."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        try:
            self.dataset[index]
            return {"index": index, "error": ""}
        except (TooManyBadVideos, RuntimeError, ValueError, OSError) as error:
            return {"index": index, "error": str(error).splitlines()[-1].strip()}


def clips_per_second(dataset, workers: int) -> tuple[float, list[dict]]:
    """(clips/s after the first item, per-item results) of one pass through ``dataset``."""
    loader = DataLoader(_Checked(dataset), batch_size=None, num_workers=workers)
    items, start, first = [], None, 0
    for item in loader:
        items.append(item)
        if start is None:  # worker start-up and the first decode are not throughput
            start, first = time.perf_counter(), len(items)
    timed = len(items) - first
    elapsed = time.perf_counter() - start if start is not None else 0.0
    return (timed / elapsed if timed and elapsed > 0 else float("nan")), items


def worker_counts(limit: int | None = None) -> list[int]:
    cores = limit or os.cpu_count() or 1
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    return counts


def loader_throughput(records, workers: list[int], demand_clips_per_s: float | None, passes=2):
    """clips/s at each worker count and how many workers keep up with ``demand_clips_per_s``.

    The videos are listed ``passes`` times, and more when needed for 4 clips per worker, in
    one pass of one loader: worker start-up is paid once, before the timing starts."""
    rows = []
    for count in workers:
        repeats = max(passes, math.ceil(4 * count / len(records)))
        rate, items = clips_per_second(training_dataset(list(records) * repeats), count)
        failures = [i for i in items if i["error"]]
        rows.append({"workers": count, "clips_per_s": rate, "per_worker": rate / count})
        if failures:
            rows[-1]["failures"] = len(failures)
    result = {"rows": rows, "demand_clips_per_s": demand_clips_per_s}
    if demand_clips_per_s:
        per_worker = max(r["per_worker"] for r in rows if not math.isnan(r["per_worker"]))
        result["workers_needed"] = math.ceil(demand_clips_per_s / per_worker)
        result["enough_at"] = next(
            (r["workers"] for r in rows if r["clips_per_s"] >= demand_clips_per_s), None
        )
    return result


def check_list(list_path, root=None, *, sample: int = 32, workers: int = 2, backend="pyav"):
    """Decode up to ``sample`` videos of a list (spread over it) through the training path."""
    records = read_video_list(list_path, root)
    if not records:
        raise ValueError(f"{list_path}: no videos listed")
    step = max(1, len(records) // sample)
    chosen = records[::step][:sample]
    rate, items = clips_per_second(training_dataset(chosen, backend=backend), workers)
    failures = [(chosen[i["index"]].path, i["error"]) for i in items if i["error"]]
    return {
        "list": str(list_path),
        "listed": len(records),
        "decoded": len(chosen) - len(failures),
        "sampled": len(chosen),
        "workers": workers,
        "clips_per_s": rate,
        "clips_per_s_per_worker": rate / workers,
        "failures": failures,
    }
