"""Keep freed memory for reuse in data-loading processes (glibc only).

A float32 clip of 64x224x224 is 38 MB. glibc serves blocks that large with a fresh mmap and
unmaps them on free, so every clip pays ~10k page faults (first touch of each 4 KB page):
as much CPU as the normalization itself. Raising glibc's mmap and trim thresholds makes such
blocks come from the heap and stay there for the next clip. The setting is process-wide, so
the datasets apply it only inside DataLoader worker processes, which do nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_applied = False


def retain_freed_memory(max_block_bytes: int = 1 << 30) -> bool:
    """Serve blocks up to `max_block_bytes` from the heap and keep freed memory (idempotent).

    Returns True when glibc accepted the setting, False elsewhere (musl, macOS, Windows).
    """
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, max_block_bytes) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2 * max_block_bytes) == 1 and ok
    _applied = ok
    if not ok:
        logger.debug("mallopt refused the thresholds; large clips will be page-faulted in")
    return ok
