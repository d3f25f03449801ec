"""Video lists (`path label` per line, as PySlowFast and MMAction2 use them) and class files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video: an absolute (or root-resolved) path and an integer class label."""

    path: str
    label: int


def parse_list_line(line: str, *, source: str = "<string>", line_no: int = 0) -> VideoRecord | None:
    """Parse one `path label` line; None for blank lines and `#` comments.

    The label is split off from the right, so paths may contain spaces.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise ValueError(
            f"{source}:{line_no}: expected 'path label', got {text!r} (no label after the path)"
        )
    path, label_text = parts
    try:
        label = int(label_text)
    except ValueError:
        raise ValueError(
            f"{source}:{line_no}: expected an integer label at the end of the line, "
            f"got {label_text!r} in {text!r}"
        ) from None
    if label < 0:
        raise ValueError(f"{source}:{line_no}: label must be >= 0, got {label} in {text!r}")
    return VideoRecord(path=path, label=label)


def read_video_list(
    list_path: str | os.PathLike, root: str | os.PathLike | None = None
) -> list[VideoRecord]:
    """Read a `path label` list; relative paths are joined to `root` (when given).

    Blank lines and lines starting with `#` are skipped. A bad line raises ValueError naming
    the file and line number.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"video list {list_path} does not exist")
    records = []
    with open(list_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            record = parse_list_line(line, source=str(list_path), line_no=line_no)
            if record is None:
                continue
            if root is not None and not os.path.isabs(record.path):
                record = VideoRecord(os.path.join(os.fspath(root), record.path), record.label)
            records.append(record)
    return records


def write_video_list(records: Iterable[VideoRecord], list_path: str | os.PathLike) -> int:
    """Write records as `path label` lines; returns the number written.

    Paths ending in whitespace or containing newlines cannot round-trip through the format.
    """
    count = 0
    Path(list_path).parent.mkdir(parents=True, exist_ok=True)
    with open(list_path, "w", encoding="utf-8") as f:
        for record in records:
            if "\n" in record.path or record.path != record.path.strip():
                raise ValueError(f"path {record.path!r} cannot be written to a 'path label' list")
            f.write(f"{record.path} {record.label}\n")
            count += 1
    return count


def read_classes(path: str | os.PathLike) -> list[str]:
    """Read class names, one per line (line i is label i - 1); blank lines are an error."""
    names = Path(path).read_text(encoding="utf-8").splitlines()
    while names and not names[-1].strip():
        names.pop()
    for line_no, name in enumerate(names, start=1):
        if not name.strip():
            raise ValueError(f"{path}:{line_no}: empty class name")
    names = [name.strip() for name in names]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: duplicate class names {duplicates}")
    return names
