"""Extract a tar archive without letting any member land outside the destination.

A member is refused, reported and never written when it is an absolute path, climbs out with
``..``, is a link whose target resolves outside the destination, or is a device or FIFO. The
rest is extracted. (Python's ``tarfile`` ``filter="data"``, 3.12 and some 3.11 releases, is
applied as well where it exists; the check here does not depend on it.)
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass
class ExtractResult:
    """What one archive gave: files written, and members refused with the reason."""

    archive: str
    written: list[str] = field(default_factory=list)  # paths relative to the destination
    refused: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)


def _inside(dest: Path, target: Path) -> bool:
    resolved = Path(os.path.realpath(target))
    return resolved == dest or dest in resolved.parents


def refusal(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why ``member`` must not be extracted into ``dest`` (resolved), or None if it is safe."""
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or ":" in name[:3]:
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path climbs out with '..'"
    if not _inside(dest, dest / name):
        return "path resolves outside the destination"
    if member.issym():
        if os.path.isabs(member.linkname):
            return f"symbolic link to an absolute path ({member.linkname})"
        if not _inside(dest, dest / PurePosixPath(name).parent / member.linkname):
            return f"symbolic link pointing outside ({member.linkname})"
    if member.islnk() and not _inside(dest, dest / member.linkname):
        return f"hard link pointing outside ({member.linkname})"
    if member.isdev() or member.isfifo():
        return "device or FIFO"
    return None


def safe_extract(archive: str | Path, dest: str | Path) -> ExtractResult:
    """Extract ``archive`` (tar, tar.gz, ...: detected) into ``dest``, refusing unsafe members.

    Raises:
        tarfile.TarError, EOFError, OSError: the archive is truncated or corrupt (members
            before the damage may have been written).
    """
    dest = Path(os.path.realpath(dest))
    dest.mkdir(parents=True, exist_ok=True)
    result = ExtractResult(str(archive))
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            reason = refusal(member, dest)
            if reason is not None:
                result.refused.append((member.name, reason))
                continue
            # Parents first: archives extracted by parallel threads share folders.
            (dest / member.name).parent.mkdir(parents=True, exist_ok=True)
            tar.extract(member, dest, set_attrs=False, **extra)
            if member.isfile():
                result.written.append(os.path.normpath(member.name))
    return result
