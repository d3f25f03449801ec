"""Datasets: record -> sampler -> decoder -> transform, with the bad-video policy.

Train (`VideoClipDataset`): a video that fails is retried `max_retries` times (a new random
clip each time), then replaced by another random video (or, with `substitute_failures=False`,
as the validation monitor uses it, returned as a failed item: {"clip": None, "error": reason},
so no video is counted twice). Every failure is counted and logged
with its path and reason (and appended to `failure_log` when given, which works across
DataLoader workers). A decode past `decode_timeout_s` (`decode_deadline`: a decoder blocked
on a damaged stream) fails the video at once, without retries. Once `min_loads` videos were
attempted and the fraction that failed exceeds `max_failure_fraction`, loading stops with
`TooManyBadVideos` and a report.
Test (`VideoTestDataset`): nothing is dropped; a video that fails comes back with empty views
and its `error`, so the results can say how many videos were evaluated out of how many.

Randomness is a function of (seed, epoch, index, attempt), so it does not depend on which
worker loads an item; call `set_epoch(epoch)` at the start of every epoch (with persistent
workers, recreate the loader instead: workers hold their own copy of the dataset).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from videogn.data.decode_deadline import DecodeTimeoutError, run_with_time_limit
from videogn.data.decoders import VideoDecodeError, get_backend, open_video
from videogn.data.frame_cache import FrameCache
from videogn.data.lists import VideoRecord
from videogn.data.malloc import retain_freed_memory
from videogn.data.samplers import TestClipSampler, TrainClipSampler
from videogn.data.transforms import TestTransform, TrainTransform

logger = logging.getLogger(__name__)


class TooManyBadVideos(RuntimeError):
    """The fraction of videos that failed to load exceeded the configured threshold."""


def _setup_loading(decode_threads: int | None) -> int:
    """Per-process loading setup; returns the decoder threads (1 inside DataLoader workers)."""
    in_worker = get_worker_info() is not None
    if in_worker:
        retain_freed_memory()  # see videogn.data.malloc: workers only do data loading
    if decode_threads is not None:
        return int(decode_threads)
    return 1 if in_worker else min(4, os.cpu_count() or 1)


def _load_frames(record: VideoRecord, backend: str, threads: int, choose_indices, cache=None):
    """Open a video, let `choose_indices(num_frames, fps)` pick frames, decode them once (or
    index them in the frame cache, when one is given)."""
    opener = open_video if cache is None else cache.open
    with opener(record.path, backend=backend, threads=threads) as video:
        try:
            indices = choose_indices(video.num_frames, video.fps)
        except ValueError as err:  # e.g. target_fps asked of a video with no known frame rate
            raise VideoDecodeError(record.path, f"cannot sample a clip: {err}") from err
        flat = np.concatenate(indices) if isinstance(indices, list) else indices
        return video.decode(flat)


def _load_frames_in_time(record: VideoRecord, timeout_s: float | None, *args):
    """`_load_frames`, or DecodeTimeoutError once it has taken `timeout_s` seconds."""
    return run_with_time_limit(lambda: _load_frames(record, *args), timeout_s, record.path)


class VideoClipDataset(Dataset):
    """Training clips: {"clip": [C, T, H, W] (float, or uint8 to normalize on the device),
    "label": int, "index": int}.

    `index` is the record actually returned (it differs from the requested one after a
    substitution). `failures` lists (path, reason) seen by this process.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        sampler: TrainClipSampler,
        transform: TrainTransform,
        backend: str = "pyav",
        decode_threads: int | None = None,
        max_retries: int = 2,
        max_substitutions: int = 10,
        max_failure_fraction: float = 0.05,
        min_loads: int = 100,
        failure_log: str | os.PathLike | None = None,
        seed: int = 0,
        frame_cache: FrameCache | None = None,
        decode_timeout_s: float | None = None,
        substitute_failures: bool = True,
    ):
        if not records:
            raise ValueError("VideoClipDataset needs at least one record")
        if not 0.0 <= max_failure_fraction <= 1.0:
            raise ValueError(f"max_failure_fraction must be in [0, 1], got {max_failure_fraction}")
        get_backend(backend)  # unknown or not installed: fail here, not in a loader worker
        self.records = list(records)
        self.sampler, self.transform = sampler, transform
        self.backend, self.decode_threads = backend, decode_threads
        self.decode_timeout_s = decode_timeout_s
        self.max_retries, self.max_substitutions = int(max_retries), int(max_substitutions)
        self.max_failure_fraction, self.min_loads = float(max_failure_fraction), int(min_loads)
        self.failure_log = None if failure_log is None else os.fspath(failure_log)
        self.seed, self.epoch = int(seed), 0
        self.frame_cache = frame_cache
        self.substitute_failures = substitute_failures
        self.failures: list[tuple[str, str]] = []
        self.num_loads = 0  # videos attempted by this process (one per video, not per retry)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Make the clips of the next epoch differ from this one's (and stay reproducible)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        threads = _setup_loading(self.decode_threads)
        pick_rng = np.random.default_rng([self.seed, self.epoch, index, 1 << 20])
        candidate = index
        for substitution in range(self.max_substitutions + 1):
            record = self.records[candidate]
            self.num_loads += 1
            reason = None
            for attempt in range(self.max_retries + 1):
                rng = np.random.default_rng([self.seed, self.epoch, index, substitution, attempt])
                try:
                    frames = _load_frames_in_time(
                        record,
                        self.decode_timeout_s,
                        self.backend,
                        threads,
                        lambda n, fps, rng=rng: self.sampler(n, rng, fps),
                        self.frame_cache,
                    )
                    clip = self.transform(frames, rng)
                except DecodeTimeoutError as err:
                    reason = err.reason
                    break  # not retried: each try could strand another blocked thread
                except VideoDecodeError as err:
                    reason = err.reason
                    continue
                return {"clip": clip, "label": record.label, "index": candidate}
            self._record_failure(record.path, reason)
            if not self.substitute_failures:
                return {"clip": None, "label": record.label, "index": index, "error": reason}
            candidate = int(pick_rng.integers(len(self.records)))
        raise TooManyBadVideos(
            f"{self.max_substitutions + 1} videos in a row failed to load for item {index}; "
            + self.failure_report()
        )

    def _record_failure(self, path: str, reason: str) -> None:
        self.failures.append((path, reason))
        logger.warning(
            "bad video (%d/%d loads failed): %s: %s",
            len(self.failures),
            self.num_loads,
            path,
            reason,
        )
        if self.failure_log is not None:
            with open(self.failure_log, "a", encoding="utf-8") as log:
                log.write(f"{path}\t{reason}\n")
        fraction = len(self.failures) / self.num_loads
        if self.num_loads >= self.min_loads and fraction > self.max_failure_fraction:
            raise TooManyBadVideos(
                f"{fraction:.1%} of videos failed to load, above max_failure_fraction="
                f"{self.max_failure_fraction:.1%}; " + self.failure_report()
            )

    def failure_report(self, limit: int = 20) -> str:
        """Human-readable summary: counts, then up to `limit` failures with path and reason."""
        lines = [f"{len(self.failures)} of {self.num_loads} video loads failed"]
        lines += [f"  {path}: {reason}" for path, reason in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


class VideoTestDataset(Dataset):
    """All K x S views of a video from one decode.

    Item: {"views": float or uint8 [K*S, C, T, H, W] (clip-major: clip k's crops are
    k*S .. k*S+S-1),
    "label": int, "index": int, "error": str | None}; a failed video has empty views and an
    error, and is never skipped.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        sampler: TestClipSampler,
        transform: TestTransform,
        backend: str = "pyav",
        decode_threads: int | None = None,
        frame_cache: FrameCache | None = None,
        decode_timeout_s: float | None = None,
    ):
        get_backend(backend)  # unknown or not installed: fail here, not in a loader worker
        self.records = list(records)
        self.sampler, self.transform = sampler, transform
        self.backend, self.decode_threads = backend, decode_threads
        self.frame_cache = frame_cache
        self.decode_timeout_s = decode_timeout_s

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        threads = _setup_loading(self.decode_threads)
        try:
            frames = _load_frames_in_time(
                record,
                self.decode_timeout_s,
                self.backend,
                threads,
                self.sampler,
                self.frame_cache,
            )
        except VideoDecodeError as err:
            logger.warning(
                "test video failed, reported in results: %s: %s", record.path, err.reason
            )
            return {
                "views": torch.empty(0),
                "label": record.label,
                "index": index,
                "error": err.reason,
            }
        clips = frames.reshape(self.sampler.num_clips, self.sampler.num_frames, *frames.shape[1:])
        crops = self.transform.views_per_clip
        height, width = self.transform.view_size(*clips.shape[2:4])  # full frame: any aspect
        views = self.transform.empty_views((len(clips) * crops, 3, clips.shape[1], height, width))
        # Every clip is transformed straight into its slice: no copy of all views at the end.
        for k, clip in enumerate(clips):
            self.transform(clip, out=views[k * crops : (k + 1) * crops])
        return {"views": views, "label": record.label, "index": index, "error": None}


def collate_test(batch: list[dict]) -> dict:
    """Batch test items of any size, failures included.

    Returns {"views": float or uint8 [sum of views, C, T, H, W] (successful videos, in batch order),
    "num_views": long [B] (0 for a failed video), "label": long [B], "index": long [B],
    "error": list of str | None}. Split scores per video with `torch.split(x, num_views)`.
    """
    views = [item["views"] for item in batch if item["error"] is None]
    return {
        "views": torch.cat(views) if views else torch.empty(0),
        "num_views": torch.tensor(
            [0 if item["error"] is not None else len(item["views"]) for item in batch]
        ),
        "label": torch.tensor([item["label"] for item in batch]),
        "index": torch.tensor([item["index"] for item in batch]),
        "error": [item["error"] for item in batch],
    }
