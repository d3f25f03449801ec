"""Build `path label` lists from the official Kinetics annotation CSV and a folder of clips.

Accepted naming schemes (any of .mp4 / .mkv / .webm, at any depth under the folder):
    <youtube_id>_<start:06d>_<end:06d>.<ext>     e.g. 0wR5jVB-WPk_000417_000427.mp4
    <class dir>/<youtube_id>.<ext>               e.g. abseiling/0wR5jVB-WPk.mp4
Class folders match a label whatever their spacing, case or punctuation
("arm wrestling", "arm_wrestling").
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from videogn.data.lists import VideoRecord, write_video_list

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")
REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class KineticsClip:
    """One row of the official CSV."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str

    @property
    def clip_stem(self) -> str:
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def class_key(name: str) -> str:
    """Normalised class name: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def read_kinetics_csv(path: str | os.PathLike, split: str | None = None) -> list[KineticsClip]:
    """Parse the official annotation CSV (quoted labels); optionally keep one split."""
    clips = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; "
                f"expected a header with {list(REQUIRED_COLUMNS)} "
                f"(the unlabelled test CSV cannot make a training list), got {reader.fieldnames}"
            )
        for row_no, row in enumerate(reader, start=2):
            if split is not None and row.get("split") != split:
                continue
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}:{row_no}: time_start/time_end must be numbers, got "
                    f"{row['time_start']!r}/{row['time_end']!r}"
                ) from None
            clips.append(
                KineticsClip(row["label"], row["youtube_id"], start, end, row.get("split", ""))
            )
    return clips


def index_video_folder(videos_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Map file stem -> relative paths of every video file under `videos_dir` (one walk)."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"video folder {videos_dir} does not exist")
    by_stem: dict[str, list[str]] = defaultdict(list)
    for dirpath, _, filenames in os.walk(videos_dir):
        for filename in filenames:
            stem, ext = os.path.splitext(filename)
            if ext.lower() in VIDEO_EXTENSIONS:
                rel = os.path.relpath(os.path.join(dirpath, filename), videos_dir)
                by_stem[stem].append(rel)
    for paths in by_stem.values():
        # Prefer mp4, then mkv, then webm, so a folder holding several copies picks one stably.
        paths.sort(key=lambda p: (VIDEO_EXTENSIONS.index(os.path.splitext(p)[1].lower()), p))
    return by_stem


def find_clip(clip: KineticsClip, by_stem: dict[str, list[str]]) -> str | None:
    """Relative path of a clip's file under either naming scheme, or None."""
    if clip.clip_stem in by_stem:
        return by_stem[clip.clip_stem][0]
    candidates = by_stem.get(clip.youtube_id, [])
    label_key = class_key(clip.label)
    in_class_dir = [
        p for p in candidates if class_key(os.path.basename(os.path.dirname(p))) == label_key
    ]
    if in_class_dir:
        return in_class_dir[0]
    return None


def build_kinetics_list(
    clips: list[KineticsClip],
    classes: list[str],
    videos_dir: str | os.PathLike,
    absolute: bool = False,
) -> tuple[list[VideoRecord], list[KineticsClip]]:
    """Match CSV rows to files; returns (records found, clips missing)."""
    label_of = {class_key(name): i for i, name in enumerate(classes)}
    unknown = sorted({c.label for c in clips if class_key(c.label) not in label_of})
    if unknown:
        raise ValueError(
            f"{len(unknown)} label(s) in the CSV are not in the class list, e.g. {unknown[:5]}"
        )
    by_stem = index_video_folder(videos_dir)
    records, missing = [], []
    for clip in clips:
        rel = find_clip(clip, by_stem)
        if rel is None:
            missing.append(clip)
            continue
        path = os.path.join(os.path.abspath(videos_dir), rel) if absolute else rel
        records.append(VideoRecord(path, label_of[class_key(clip.label)]))
    return records, missing


def write_kinetics_list(
    csv_path: str | os.PathLike,
    classes: list[str],
    videos_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str | None = None,
    missing_path: str | os.PathLike | None = None,
    absolute: bool = False,
) -> tuple[int, int]:
    """``videogn-data build``: the list of the CSV's clips found under ``videos_dir`` (and the
    missing rows, as CSV, in ``missing_path``). Returns (clips listed, rows in the CSV)."""
    clips = read_kinetics_csv(csv_path, split=split)
    records, missing = build_kinetics_list(clips, classes, videos_dir, absolute)
    write_video_list(records, out)
    if missing_path is not None:
        with open(missing_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for c in missing:
                writer.writerow([c.label, c.youtube_id, c.time_start, c.time_end, c.split])
    return len(records), len(clips)
