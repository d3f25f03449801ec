"""data.frame_cache: each video decoded once; clips, test views and bad-video handling are the
same as without the cache, in memory, in a directory shared by processes, and in loader
workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from videogn.config import CONFIG_DIR, register_configs
from videogn.data.dataset import VideoClipDataset, VideoTestDataset
from videogn.data.decoders import BACKENDS, VideoDecodeError, open_video
from videogn.data.frame_cache import CachedVideo, FrameCache, make_frame_cache
from videogn.data.lists import VideoRecord
from videogn.data.pyav_backend import PyAVReader
from videogn.data.samplers import TestClipSampler, TrainClipSampler
from videogn.data.transforms import TestTransform, TrainTransform
from videogn.data.video_writer import write_video
from videogn.engine.builders.data import build_data


@pytest.fixture(scope="module")
def records(tmp_path_factory, make_numbered_frames) -> list[VideoRecord]:
    """Six good videos of different lengths, then a text file and an empty file."""
    root = tmp_path_factory.mktemp("frame_cache_videos")
    good = []
    for i in range(6):
        path = root / f"good_{i}.mp4"
        write_video(path, make_numbered_frames(18 + 3 * i, seed=i), gop=8)
        good.append(VideoRecord(str(path), i))
    (root / "text.mp4").write_text("not a video")
    (root / "empty.mp4").write_bytes(b"")
    return good + [VideoRecord(str(root / "text.mp4"), 9), VideoRecord(str(root / "empty.mp4"), 9)]


def train_set(records, cache) -> VideoClipDataset:
    return VideoClipDataset(
        records,
        sampler=TrainClipSampler(4, 3),
        transform=TrainTransform(scale_range=(40, 48), crop_size=32, output_dtype="uint8"),
        seed=3,
        min_loads=1000,
        frame_cache=cache,
    )


def views_set(records, cache) -> VideoTestDataset:
    return VideoTestDataset(
        records,
        sampler=TestClipSampler(4, 3, num_clips=3),
        transform=TestTransform(short_side=40, crop_size=32, num_crops=3, output_dtype="uint8"),
        frame_cache=cache,
    )


def items(dataset, epochs=(0, 1)) -> list[dict]:
    out = []
    for epoch in epochs:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        out += [dataset[i] for i in range(len(dataset))]
    return out


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize("where", ["memory", "dir"])
def test_cached_clips_and_views_equal_uncached(records, tmp_path, where):
    cache = FrameCache("memory" if where == "memory" else tmp_path / "frames")
    uncached, cached = train_set(records, None), train_set(records, cache)
    assert_same(items(cached), items(uncached))
    stored = len(cache._videos) if where == "memory" else len(list(cache_dir(tmp_path)))
    assert stored == 6  # every good video was served from the cache, the bad ones were not
    # the bad files fail the same way (same reasons, same substitutes) with and without it
    assert cached.failures == uncached.failures and len(cached.failures) > 0
    assert_same(items(views_set(records, cache)), items(views_set(records, None)))


def cache_dir(tmp_path):
    return (tmp_path / "frames").glob("*.npy")


def test_a_torn_cache_file_is_decoded_again(records, tmp_path):
    path = records[1].path
    with FrameCache(tmp_path / "frames").open(path) as video:
        want = video.decode([0, 5])
    (npy,) = cache_dir(tmp_path)
    npy.write_bytes(npy.read_bytes()[:100])  # a file cut short (a crash, a full disk)
    with FrameCache(tmp_path / "frames").open(path) as video:
        assert np.array_equal(video.decode([0, 5]), want)
    assert npy.stat().st_size > 1000  # rewritten whole


def test_directory_cache_is_shared_and_memory_mapped(records, tmp_path):
    good = [r.path for r in records if r.label != 9]
    first = FrameCache(tmp_path / "frames")
    for path in good:
        with first.open(path) as video:
            video.decode([0])
    assert len(list((tmp_path / "frames").glob("*.npy"))) == len(good)
    assert not list((tmp_path / "frames").glob("*.tmp"))
    second = FrameCache(tmp_path / "frames")  # another process or run naming the same folder
    video = second.open(good[2])
    assert isinstance(video, CachedVideo) and isinstance(video.frames, np.memmap)
    assert video.num_frames == 24


class DamagedTailReader(PyAVReader):
    """A PyAV reader of a file whose last two frames do not decode (a damaged tail)."""

    def decode(self, frame_indices):
        if max(frame_indices) >= self.num_frames - 2:
            raise VideoDecodeError(self.path, "damaged tail")
        return super().decode(frame_indices)


def test_a_video_that_cannot_be_decoded_whole_is_read_uncached(records, tmp_path, monkeypatch):
    """Not stored; its clips succeed or fail exactly as through the backend."""
    monkeypatch.setitem(BACKENDS, "damaged_tail", DamagedTailReader)
    cache, path = FrameCache(tmp_path / "frames"), records[0].path
    with cache.open(path, backend="damaged_tail") as video:
        assert not isinstance(video, CachedVideo)
        with open_video(path) as direct:
            assert np.array_equal(video.decode([0, 1, 2]), direct.decode([0, 1, 2]))
        with pytest.raises(VideoDecodeError, match="damaged tail"):
            video.decode([video.num_frames - 1])
    assert not list((tmp_path / "frames").iterdir())
    assert isinstance(cache.open(path), CachedVideo)  # the healthy backend's key is its own


def test_loader_workers_give_the_same_batches(records, tmp_path):
    good = records[:6]
    batches = []
    for cache in (None, make_frame_cache(tmp_path / "frames")):
        dataset = train_set(good, cache)
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=3, num_workers=2)
            batches += [batch["clip"] for batch in loader]
    assert len(list(cache_dir(tmp_path))) == 6  # the workers wrote the shared directory
    half = len(batches) // 2
    assert all(torch.equal(a, b) for a, b in zip(batches[:half], batches[half:], strict=True))


def compose_memory_with_workers():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["data.frame_cache=memory", "data.num_workers=2"])
    return cfg.data


def test_the_data_key_builds_the_cache(tmp_path):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        off = compose("train")
        on = compose("train", overrides=[f"data.frame_cache={tmp_path / 'frames'}"])
    assert build_data(off.data).frame_cache is None
    spec = build_data(on.data)
    assert spec.frame_cache.location == str(tmp_path / "frames")
    assert (tmp_path / "frames").is_dir()
    assert make_frame_cache("none") is None and make_frame_cache("memory").in_memory
    with pytest.raises(ValueError, match="data.frame_cache=memory with data.num_workers=2"):
        build_data(compose_memory_with_workers())
