"""A time limit on decoding one video, so that a decoder blocked on a damaged stream cannot
hang a run.

The decode runs on one helper thread of the loading process, reused for every video; the
caller waits at most ``timeout_s`` for it. Past that, :class:`DecodeTimeoutError` (a
:class:`VideoDecodeError`, so the bad-video policy counts the video as failed, with the
reason) is raised, and the blocked thread is left behind: a thread cannot be killed, so it
is a daemon that ends with the process (or by itself, if the decoder ever returns), and a
fresh helper thread takes the next video. The cost is one stranded thread per hung video,
never one thread per item.

Each process has its own helper (a DataLoader worker forked from a process that had one
starts its own: a forked child has none of its parent's threads). Limits: the decoder must
release the GIL while it blocks (PyAV and decord do, in their C calls); a decoder spinning
in Python code is also cut off, since the waiting thread gets the GIL back every few ms.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from videogn.data.video_reader import VideoDecodeError

Result = TypeVar("Result")
THREAD_NAME = "videogn-decode"


class DecodeTimeoutError(VideoDecodeError):
    """Decoding a video took longer than its time limit (it may never have finished)."""


class _HelperThread:
    """A daemon thread running the jobs put on its queue, one at a time."""

    def __init__(self):
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.abandoned = False
        threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True).start()

    def _serve(self) -> None:
        while not self.abandoned:
            job, future = self.jobs.get()
            try:
                future.set_result(job())
            except BaseException as err:  # handed to the waiting caller, raised there
                future.set_exception(err)

    def submit(self, job: Callable[[], Result]) -> Future:
        future: Future = Future()
        self.jobs.put((job, future))
        return future


_helper: _HelperThread | None = None


def run_with_time_limit(
    decode: Callable[[], Result],
    timeout_s: float | None,
    path: str | os.PathLike,
    setting: str = "data.decode_timeout_s",
) -> Result:
    """``decode()``, or DecodeTimeoutError naming ``path`` after ``timeout_s`` seconds.

    ``timeout_s`` None or 0: no limit, ``decode`` runs in the calling thread. ``setting``
    names the option that set the limit, in the error's reason.
    """
    global _helper
    if not timeout_s:
        return decode()
    if _helper is None or _helper.pid != os.getpid():
        _helper = _HelperThread()
    future = _helper.submit(decode)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        if future.done():  # finished just now, or the decode raised a TimeoutError itself
            return future.result()
        _helper.abandoned, _helper = True, None  # it ends once (if ever) the decode returns
        raise DecodeTimeoutError(
            path,
            f"decoding did not finish within {timeout_s:g} s ({setting}); "
            "the decoder may hang on a damaged stream",
        ) from None
