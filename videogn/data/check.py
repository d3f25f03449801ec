"""Probe every video of a list in parallel: a report and a clean list without bad videos.

A video is "ok" when it opens, its first and last frames decode (or every frame, with
`full=True`) and it has at least `min_frames` frames; "short" when it decodes but has fewer;
"unreadable" otherwise, with the reason.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from videogn.data.decode_deadline import run_with_time_limit
from videogn.data.decoders import VideoDecodeError, get_backend, open_video
from videogn.data.lists import VideoRecord
from videogn.utils.parallel import progress_map

REPORT_COLUMNS = ("path", "status", "reason", "frames", "fps", "width", "height")
_FULL_DECODE_CHUNK = 128  # frames per decode call when checking every frame (bounds memory)


@dataclass(frozen=True)
class VideoCheck:
    """Outcome of checking one video (`path` as written in the list)."""

    path: str
    status: str  # "ok" | "short" | "unreadable"
    reason: str
    frames: int | None
    fps: float | None
    width: int | None
    height: int | None


def _probe(resolved_path: str, backend: str, full: bool):
    """Open, decode the first and last frames (or every frame), return the VideoInfo."""
    with open_video(resolved_path, backend=backend, threads=1) as video:
        info = video.info()
        if full:
            for start in range(0, video.num_frames, _FULL_DECODE_CHUNK):
                video.decode(np.arange(start, min(start + _FULL_DECODE_CHUNK, video.num_frames)))
        else:
            video.decode([video.num_frames - 1])
    return info


def check_video(
    path: str,
    resolved_path: str,
    backend: str = "pyav",
    min_frames: int = 1,
    full: bool = False,
    timeout_s: float | None = None,
) -> VideoCheck:
    """Check one video; never raises for a bad file (the reason goes into the result), nor
    hangs on one: past ``timeout_s`` it is unreadable (``decode_deadline``)."""
    try:
        info = run_with_time_limit(
            lambda: _probe(resolved_path, backend, full), timeout_s, resolved_path, "--timeout-s"
        )
    except VideoDecodeError as err:
        return VideoCheck(path, "unreadable", err.reason, None, None, None, None)
    except Exception as err:  # a bug or an exotic failure must not stop a 300k-video check
        return VideoCheck(
            path, "unreadable", f"unexpected {type(err).__name__}: {err}", None, None, None, None
        )
    status, reason = "ok", ""
    if info.num_frames < min_frames:
        status, reason = "short", f"{info.num_frames} frames < min_frames={min_frames}"
    return VideoCheck(
        path, status, reason, info.num_frames, round(info.fps, 3), info.width, info.height
    )


def _check_task(args: tuple) -> VideoCheck:
    return check_video(*args)


def check_videos(
    items: list[tuple[str, str]],
    *,
    backend: str = "pyav",
    min_frames: int = 1,
    full: bool = False,
    workers: int = 1,
    progress: bool = True,
    timeout_s: float | None = None,
) -> list[VideoCheck]:
    """Check (list path, resolved path) pairs with `workers` processes; results in input order.
    A video whose check takes longer than `timeout_s` is unreadable (None: no limit)."""
    get_backend(backend)  # a missing decoder library must not mark every video unreadable
    tasks = [(path, resolved, backend, min_frames, full, timeout_s) for path, resolved in items]
    return progress_map(
        _check_task, tasks, workers=workers, desc="checking videos", chunksize=4, progress=progress
    )


def write_report(results: list[VideoCheck], report_path: str | os.PathLike) -> None:
    """Tab-separated report, one row per video, header `REPORT_COLUMNS`."""
    with open(report_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_COLUMNS, delimiter="\t")
        writer.writeheader()
        for result in results:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(result).items()})


def clean_records(records: list[VideoRecord], results: list[VideoCheck]) -> list[VideoRecord]:
    """The records whose check came back ok, in list order."""
    return [
        record for record, result in zip(records, results, strict=True) if result.status == "ok"
    ]


def summarize(results: list[VideoCheck]) -> str:
    counts = Counter(r.status for r in results)
    parts = ", ".join(
        f"{status} {counts.get(status, 0)}" for status in ("ok", "short", "unreadable")
    )
    return f"checked {len(results)} videos: {parts}"
