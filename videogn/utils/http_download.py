"""Resumable HTTP(S) downloads: continue a partial file at the byte with a Range request.

Shared by the named pretrained weights (:mod:`videogn.models.pretrained_sources`) and the
Kinetics download (:mod:`videogn.data.kinetics_download`). A transfer writes ``<dest>.part``;
the caller renames it once the file is complete and checked, so a file under its final name
is always whole.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20
USER_AGENT = "videogn-download/1"


class DownloadError(OSError):
    """A transfer that could not start or did not finish; the message names the address."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _total_from_headers(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes \d+-\d+/(\d+)", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left past our offset: the part is complete
            return None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason})") from e


def fetch_part(
    url: str,
    part: Path,
    *,
    timeout: float = 30.0,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Download ``url`` into ``part``, continuing from its current size; returns its size.

    A server that ignores the Range header (status 200) gets the file from the start.

    Raises:
        DownloadError: no connection, an HTTP error, or the body ended before its declared
            length (the part keeps what arrived; call again to continue).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return offset
    with response:
        if offset and response.status != 206:
            offset = 0  # Range ignored: the body is the whole file
        total = _total_from_headers(response, offset)
        size = offset
        with open(part, "ab" if offset else "wb") as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            except (TimeoutError, http.client.IncompleteRead, ConnectionError) as e:
                raise DownloadError(f"{url}: transfer interrupted at byte {size} ({e})") from e
    if total is not None and size < total:
        raise DownloadError(f"{url}: transfer interrupted at byte {size} of {total}")
    return size


def fetch_resuming(
    url: str,
    part: Path,
    *,
    attempts: int = 3,
    timeout: float = 30.0,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """:func:`fetch_part`, retried (each retry continues at the byte) up to ``attempts`` times
    while bytes keep arriving; a refused connection fails at once."""
    for attempt in range(1, attempts + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            return fetch_part(url, part, timeout=timeout, on_bytes=on_bytes)
        except DownloadError:
            progressed = part.exists() and part.stat().st_size > before
            if attempt == attempts or not progressed:
                raise
    raise AssertionError("unreachable")


def remote_size(url: str, timeout: float = 30.0) -> int | None:
    """The size a server declares for ``url`` (HEAD), or None when it does not say."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from e
    return int(length) if length is not None else None


def fetch_text(url: str, timeout: float = 30.0) -> str:
    """A small text resource (a path list, an md5sum file)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from e
