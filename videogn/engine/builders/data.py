"""The ``data`` group -> a :class:`DataSpec`: where the lists are, how videos are read and
augmented, and the batch asked for; it makes the datasets from records and a sampler."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from videogn.config import enum_value
from videogn.data.dataset import VideoClipDataset, VideoTestDataset
from videogn.data.frame_cache import MEMORY, FrameCache, make_frame_cache
from videogn.data.lists import VideoRecord, read_video_list
from videogn.data.samplers import TestClipSampler, TrainClipSampler
from videogn.data.transforms import TestTransform, TrainTransform, normalization
from videogn.engine import distributed


@dataclass
class DataSource:
    """Resolved locations of a dataset's lists; relative list paths join their split's root."""

    train_list: str | None  # None: a test-only run (videogn-test on other videos)
    train_root: str | None
    val_list: str
    val_root: str | None
    classes_file: str | None
    num_classes: int


@dataclass
class BatchRequest:
    """``data.batch_size`` (clips per process, or "auto": the memory planner decides)."""

    batch_size: Any
    target_total_batch: int
    memory_budget_gb: float | None


@dataclass
class DataSpec:
    """How the dataset's videos become clips; config-free (see :func:`build_data`).

    The lists are located by :meth:`resolve` (which generates the demo dataset when that
    is the source), so building the spec itself touches no file.
    """

    source: DataSource | None  # None until resolve() for the demo dataset
    demo: dict | None  # {"cache_dir", "params"} of the demo dataset, if it is the source
    normalization: tuple  # (mean, std) the weights expect
    backend: str
    decode_threads: int
    decode_timeout_s: float | None
    num_workers: int
    output_dtype: str
    max_failure_fraction: float
    train_transform: TrainTransform
    batch: BatchRequest
    frame_cache: FrameCache | None = None  # data.frame_cache: decode each video once

    def resolve(self, dist: distributed.DistInfo) -> DataSource:
        """The lists to read; the demo dataset is generated first (by rank 0) if needed."""
        if self.source is None:
            self.source = demo_source(self.demo, dist)
        return self.source

    def train_records(self) -> list[VideoRecord]:
        s = self.source
        if s.train_list is None:
            raise ValueError(
                "data.train_list is not set (give data.root=... or data.train_list=...)"
            )
        return read_records(s.train_list, s.train_root, s.num_classes)

    def val_records(self, max_videos: int | None = None) -> list[VideoRecord]:
        """The validation list's records (its first ``max_videos``, if given)."""
        s = self.source
        return read_records(s.val_list, s.val_root, s.num_classes)[:max_videos]

    def train_dataset(
        self, records, sampler: TrainClipSampler, seed: int, substitute_failures: bool = True
    ) -> VideoClipDataset:
        """Clips as training draws them; ``substitute_failures=False`` reports a video that
        fails instead of replacing it (the validation monitor)."""
        return VideoClipDataset(
            records,
            sampler=sampler,
            transform=self.train_transform,
            backend=self.backend,
            decode_threads=self.decode_threads,
            max_failure_fraction=self.max_failure_fraction,
            seed=seed,
            frame_cache=self.frame_cache,
            decode_timeout_s=self.decode_timeout_s,
            substitute_failures=substitute_failures,
        )

    def test_dataset(
        self, records, sampler: TestClipSampler, transform: TestTransform
    ) -> VideoTestDataset:
        return VideoTestDataset(
            records,
            sampler=sampler,
            transform=transform,
            backend=self.backend,
            frame_cache=self.frame_cache,
            decode_timeout_s=self.decode_timeout_s,
        )


def frame_cache_for(location: str | None, num_workers: int) -> FrameCache | None:
    """``data.frame_cache``; "memory" with loader workers is refused, since workers made anew
    every epoch would decode every video whole again each epoch (slower than no cache)."""
    if location == MEMORY and num_workers > 0:
        raise ValueError(
            f"data.frame_cache=memory with data.num_workers={num_workers}: each loader worker "
            "would fill its own cache again every epoch; give a directory (shared by workers "
            "and runs) or set data.num_workers=0"
        )
    return make_frame_cache(location)


def decode_time_limit(seconds: float | None) -> float | None:
    """``data.decode_timeout_s`` checked: None (or 0) for no limit, else positive seconds."""
    if seconds is not None and seconds < 0:
        raise ValueError(
            f"data.decode_timeout_s must be a positive number of seconds, or null or 0 for no "
            f"limit; got {seconds}"
        )
    return seconds or None


def build_data(data_cfg: DictConfig) -> DataSpec:
    """The ``data`` group as a :class:`DataSpec`."""
    d = data_cfg
    try:
        mean, std = normalization(d.normalization)
    except ValueError as e:
        raise ValueError(f"data.normalization: {e}") from None
    output_dtype = enum_value(d.output_dtype)
    train_transform = TrainTransform(
        scale_range=tuple(d.scale_range),
        crop_size=d.crop_size,
        flip_p=d.flip_p,
        mean=mean,
        std=std,
        output_dtype=output_dtype,
    )
    return DataSpec(
        source=list_source(d),
        demo=demo_request(d),
        normalization=(mean, std),
        backend=enum_value(d.backend),
        decode_threads=d.decode_threads,
        decode_timeout_s=decode_time_limit(d.decode_timeout_s),
        num_workers=d.num_workers,
        output_dtype=output_dtype,
        max_failure_fraction=d.max_failure_fraction,
        train_transform=train_transform,
        batch=BatchRequest(d.batch_size, d.target_total_batch, d.memory_budget_gb),
        frame_cache=frame_cache_for(d.frame_cache, d.num_workers),
    )


def demo_cache_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("VIDEOGN_CACHE") or "~/.cache/videogn"
    return Path(base).expanduser() / "demo"


def demo_request(data_cfg: DictConfig) -> dict | None:
    if enum_value(data_cfg.source) != "demo":
        return None
    return {
        "cache_dir": demo_cache_dir(data_cfg.demo.cache_dir),
        "params": OmegaConf.to_container(data_cfg.demo.params, resolve=True),
        "num_classes": data_cfg.num_classes,
    }


def demo_source(demo: dict, dist: distributed.DistInfo) -> DataSource:
    """Generate (rank 0, once, cached) the demo dataset and locate its lists."""
    from videogn.data.demo import ensure_demo_dataset

    if dist.is_main:
        ensure_demo_dataset(demo["cache_dir"], **demo["params"])
    distributed.barrier()
    dataset = ensure_demo_dataset(demo["cache_dir"], **demo["params"])
    if dataset.num_classes != demo["num_classes"]:
        raise ValueError(
            f"data.num_classes={demo['num_classes']} but the demo dataset in "
            f"{dataset.root} has {dataset.num_classes} classes"
        )
    root = str(dataset.root)
    return DataSource(str(dataset.train_list), root, str(dataset.val_list), root,
                      str(dataset.classes_file), dataset.num_classes)  # fmt: skip


def list_source(data_cfg: DictConfig) -> DataSource | None:
    """The lists of ``data.source=lists`` (None for the demo, located when generated)."""
    if enum_value(data_cfg.source) == "demo":
        return None
    # The val list is needed by every run; the train list only by training (train_records).
    if data_cfg.val_list is None:
        raise ValueError(
            f"data.val_list is not set for dataset '{data_cfg.name}' "
            "(give data.root=... or data.val_list=...)"
        )
    return DataSource(
        data_cfg.train_list,
        data_cfg.train_root if data_cfg.train_root is not None else data_cfg.root,
        data_cfg.val_list,
        data_cfg.val_root if data_cfg.val_root is not None else data_cfg.root,
        data_cfg.classes_file,
        data_cfg.num_classes,
    )


def read_records(list_path: str, root: str | None, num_classes: int) -> list[VideoRecord]:
    """A list's records, each label checked against ``num_classes``."""
    records = read_video_list(list_path, root=root)
    if not records:
        raise ValueError(f"video list {list_path} is empty")
    bad = [r for r in records if not 0 <= r.label < num_classes]
    if bad:
        raise ValueError(
            f"{list_path}: label {bad[0].label} of {bad[0].path} is outside "
            f"[0, {num_classes}) (data.num_classes={num_classes})"
        )
    return records
