"""Decode each video once, then serve every clip of it from stored frames (``data.frame_cache``).

For small datasets read many times over (the mini Table 8 reads its 2304 short videos in 24
runs of many epochs, and decoding was ~60% of take 2's run time): the first time a video is
opened, all its frames are decoded by the configured backend; every later open indexes the
stored frames. The cache sits *under* the sampler and the transform: they see the same
``num_frames``, ``fps`` and uint8 frames as without it, so the batches are identical
(``tests/data/test_frame_cache.py``). It is no place for Kinetics (a decoded 10 s clip at
256×340 and 30 fps is ~78 MB).

Where the frames live:
- ``memory``: a dict in this process; with loader workers, each worker fills its own, and
  workers made anew every epoch start empty again (use a directory there);
- a directory: one ``.npy`` per video, memory-mapped when read, shared by every process and
  every run that names the same directory. A file is written under a temporary name and
  renamed into place, with a ``.json`` beside it written last, so a reader never sees half a
  video; the key hashes the video's absolute path, size, modification time and the backend,
  so a replaced video is decoded again.

A video whose full decode fails (a damaged tail, say) is not cached: it is read through the
backend as without the cache, so the bad-video policy sees exactly what it would see. A stored
file that cannot be read back (truncated, half its pair missing) counts as absent: the video is
decoded again and the file rewritten. The first, whole decode of a video runs inside
``data.decode_timeout_s`` like any decode; keep the cache to short videos.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from videogn.data.decoders import open_video
from videogn.data.video_reader import VideoDecodeError, validate_frame_indices

logger = logging.getLogger(__name__)

MEMORY = "memory"


class CachedVideo:
    """A video served from stored frames; the reader interface the datasets use."""

    def __init__(self, path: str, frames: np.ndarray, fps: float):
        self.path, self.frames, self.fps = path, frames, float(fps)
        self.num_frames = int(frames.shape[0])

    def decode(self, frame_indices) -> np.ndarray:
        indices = validate_frame_indices(frame_indices, self.num_frames, self.path)
        return np.ascontiguousarray(self.frames[indices])

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameCache:
    """Stored decoded frames, in this process's memory or in a directory of ``.npy`` files."""

    def __init__(self, location: str | os.PathLike):
        self.location = os.fspath(location)
        self.in_memory = self.location == MEMORY
        self._videos: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
        self._uncacheable: set[tuple[str, str]] = set()  # (path, backend)
        if not self.in_memory:
            Path(self.location).expanduser().mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict:
        # Pickled (spawned loader workers, copies): never ship the decoded videos; a forked
        # worker inherits them instead. The builder refuses memory + workers anyway.
        return {**self.__dict__, "_videos": {}, "_uncacheable": set()}

    def open(self, path: str | os.PathLike, backend: str = "pyav", threads: int = 1):
        """A reader of ``path``: stored frames when they exist or can be made, else the
        backend's own reader (the video could not be decoded whole)."""
        path = os.fspath(path)
        if (path, backend) in self._uncacheable:
            return open_video(path, backend=backend, threads=threads)
        stored = (
            self._videos.get((path, backend)) if self.in_memory else self._read_file(path, backend)
        )
        if stored is None:
            stored = self._decode_whole(path, backend, threads)
            if stored is None:
                return open_video(path, backend=backend, threads=threads)
        return CachedVideo(path, *stored)

    def _decode_whole(self, path: str, backend: str, threads: int):
        with open_video(path, backend=backend, threads=threads) as video:
            fps = video.fps
            try:
                frames = video.decode(np.arange(video.num_frames))
            except (VideoDecodeError, ValueError) as err:
                logger.info("frame cache: %s is read uncached (%s)", path, err)
                self._uncacheable.add((path, backend))
                return None
        if self.in_memory:
            self._videos[(path, backend)] = (frames, fps)
        else:
            self._write_file(path, backend, frames, fps)
        return frames, fps

    def _key(self, path: str, backend: str) -> Path:
        stat = os.stat(path)
        identity = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{backend}"
        digest = hashlib.sha1(identity.encode()).hexdigest()[:20]
        return Path(self.location).expanduser() / digest

    def _read_file(self, path: str, backend: str):
        try:
            key = self._key(path, backend)
        except OSError:
            return None  # a missing video: the backend reports it
        meta = key.with_suffix(".json")
        if not meta.is_file():
            return None
        try:
            fps = json.loads(meta.read_text(encoding="utf-8"))["fps"]
            return np.load(key.with_suffix(".npy"), mmap_mode="r"), fps
        except (OSError, ValueError, KeyError) as err:  # torn or half-deleted: decode again
            logger.warning("frame cache: %s unreadable (%s); decoding %s again", key, err, path)
            return None

    def _write_file(self, path: str, backend: str, frames: np.ndarray, fps: float) -> None:
        key = self._key(path, backend)
        for suffix, write in (
            (".npy", lambda f: np.save(f, frames)),
            (".json", lambda f: f.write(json.dumps({"fps": fps, "video": path}).encode())),
        ):
            fd, tmp = tempfile.mkstemp(dir=key.parent, prefix=key.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())  # on disk before it is renamed into place
                os.replace(tmp, key.with_suffix(suffix))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def make_frame_cache(location: str | None) -> FrameCache | None:
    """``data.frame_cache``: None (off), ``memory``, or a directory."""
    if location is None or str(location).lower() in ("", "none", "null"):
        return None
    return FrameCache(location)
