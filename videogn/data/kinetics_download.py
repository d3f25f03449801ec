"""``videogn-data download kinetics400``: the official Kinetics-400 archives -> `path label` lists.

The layout is the one the CVDF (github.com/cvdfoundation/kinetics-dataset) publishes under
``https://s3.amazonaws.com/kinetics/400``: ``{split}/k400_{split}_path.txt`` lists the
tarballs of a split (``{split}/part_N.tar.gz``), ``annotations/{split}.csv`` the labels, and
``replacement_for_corrupted_k400.tgz`` ~1300 re-encoded videos for corrupted ones. Under
``--out DIR`` it writes::

    DIR/annotations/{train,val,test}.csv    the official CSVs
    DIR/archives/{split}/part_N.tar.gz      the tarballs (resumed at the byte; --delete-archives)
    DIR/{split}/*.mp4                       the clips, extracted as each archive completes
    DIR/{split}/{split}.txt                 the list videogn-train reads (data.root=DIR)

Resumable at the byte (HTTP Range) and at the file: an archive whose size matches the server's
is not fetched again, an extracted one (``<archive>.extracted``) not extracted again, a short
one is continued, and one that fails to extract is fetched again from the start, once.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import shutil
import tarfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from videogn.data.kinetics import write_kinetics_list
from videogn.data.lists import read_classes
from videogn.data.safe_extract import ExtractResult, safe_extract
from videogn.utils.http_download import DownloadError, fetch_resuming, fetch_text, remote_size

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://s3.amazonaws.com/kinetics/400"
SPLITS = ("train", "val", "test")
REPLACEMENT = "replacement_for_corrupted_k400.tgz"
REFUSED_RECORD = "refused_members.tsv"  # archive, member, reason: one line per refusal
# What a truncated or damaged archive raises (not disk errors: those must not delete it).
CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its address, where it goes, and the split it belongs to."""

    url: str
    path: Path
    split: str

    @property
    def marker(self) -> Path:  # written once the archive is extracted
        return self.path.with_name(self.path.name + ".extracted")


@dataclass
class DownloadSummary:
    """What a run did, for the closing message and the tests."""

    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # complete from an earlier run
    refetched: list[str] = field(default_factory=list)  # corrupt on disk, fetched again
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # archive, member, why
    replaced: int = 0
    lists: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (found, rows)


def rebase(url: str, base_url: str) -> str:
    """A listed address moved onto ``base_url`` (a mirror): the path after ``/400/`` is kept."""
    url = url.strip()
    if base_url.rstrip("/") == OFFICIAL_BASE_URL or "://" not in url:
        return url if "://" in url else f"{base_url.rstrip('/')}/{url.lstrip('/')}"
    path = urlsplit(url).path
    tail = path.split("/400/", 1)[1] if "/400/" in path else path.lstrip("/")
    return f"{base_url.rstrip('/')}/{tail}"


def list_archives(base_url: str, split: str, out: Path) -> list[Archive]:
    """The tarballs of ``split``, from its official path list."""
    list_url = f"{base_url.rstrip('/')}/{split}/k400_{split}_path.txt"
    lines = [line for line in fetch_text(list_url).splitlines() if line.strip()]
    if not lines:
        raise DownloadError(f"{list_url}: the path list is empty")
    archives = []
    for line in lines:
        url = rebase(line, base_url)
        archives.append(
            Archive(url, out / "archives" / split / Path(urlsplit(url).path).name, split)
        )
    return archives


def fetch_small(url: str, path: Path) -> None:
    """An annotation CSV: fetched when absent or of another size than the server's."""
    size = remote_size(url)
    if path.is_file() and (size is None or path.stat().st_size == size):
        return
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    fetch_resuming(url, part)
    os.replace(part, path)


class Transfer:
    """Fetches and extracts archives, sharing one byte progress bar between threads."""

    def __init__(self, out: Path, summary: DownloadSummary, progress: bool):
        from tqdm.auto import tqdm

        self.out, self.summary = out, summary
        self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)
        self.lock = threading.Lock()

    def add_total(self, nbytes: int) -> None:
        if nbytes:
            with self.lock:
                self.bar.total += nbytes
                self.bar.refresh()

    def on_bytes(self, nbytes: int) -> None:
        with self.lock:
            self.bar.update(nbytes)

    def fetch(self, archive: Archive, size: int | None) -> None:
        """Make ``archive.path`` whole: skip it if complete, else continue or start it."""
        path, part = archive.path, archive.path.with_name(archive.path.name + ".part")
        if path.is_file() and (size is None or path.stat().st_size == size):
            self.on_bytes(path.stat().st_size)
            self.summary.skipped.append(path.name)
            return
        if path.is_file():  # under its final name but short (or long): continue it as a part
            logger.warning(
                "%s: %d bytes on disk, %s on the server", path, path.stat().st_size, size
            )
            os.replace(path, part)
        if part.is_file():
            self.on_bytes(part.stat().st_size)  # what an earlier run already fetched
        fetch_resuming(archive.url, part, on_bytes=self.on_bytes)
        if size is not None and part.stat().st_size != size:
            part.unlink()
            raise DownloadError(f"{archive.url}: got {part.stat().st_size} bytes, expected {size}")
        os.replace(part, path)
        self.summary.fetched.append(path.name)

    def extract(self, archive: Archive, dest: Path) -> ExtractResult:
        """Extract; a corrupt archive is deleted and fetched again from the start, once."""
        try:
            result = safe_extract(archive.path, dest)
        except CORRUPT as e:
            logger.warning("%s is corrupt (%s): fetching it again", archive.path, e)
            archive.path.unlink(missing_ok=True)
            self.summary.refetched.append(archive.path.name)
            self.fetch(archive, remote_size(archive.url))
            result = safe_extract(archive.path, dest)
        refused = [(archive.path.name, m, why) for m, why in result.refused]
        with self.lock:  # recorded as found: a run that fails later still leaves the record
            self.summary.refused += refused
            for name, member, why in refused:
                logger.warning("refused %s: %s (%s); not written", name, member, why)
                record = self.out / REFUSED_RECORD
                with open(record, "a", encoding="utf-8") as f:
                    f.write(f"{name}\t{member}\t{why}\n")
        return result

    def complete(self, archive: Archive, dest: Path, delete: bool, size: int | None) -> None:
        """Fetch, extract and mark one archive (skipped entirely when marked)."""
        if archive.marker.is_file():
            self.summary.skipped.append(archive.path.name)
            return
        self.fetch(archive, size)
        self.extract(archive, dest)
        archive.marker.write_text(f"{archive.path.stat().st_size}\n")
        if delete:
            archive.path.unlink()


def run_parallel(transfer: Transfer, jobs: list[tuple[Archive, Path]], workers: int, delete: bool):
    """Every archive through :meth:`Transfer.complete`, ``workers`` at a time; errors re-raised
    after the others finish, so one bad address does not waste the rest of the run."""
    sizes = {a: None if a.marker.is_file() else remote_size(a.url) for a, _ in jobs}
    transfer.add_total(sum(size or 0 for size in sizes.values()))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(transfer.complete, a, d, delete, sizes[a]) for a, d in jobs]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def route_replacements(extracted: Path, out: Path, annotations: dict[str, Path]) -> int:
    """Move each replacement video over the clip of the same name, in the split its CSV row
    names; returns how many were placed."""
    split_of = {}
    for split, csv_path in annotations.items():
        with open(csv_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                stem = (
                    f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
                )
                split_of[stem] = split
    placed = 0
    for video in sorted(p for p in extracted.rglob("*") if p.is_file()):
        split = split_of.get(video.stem)
        if split is None or not (out / split).is_dir():
            continue
        target = out / split / video.name
        if not (target.is_file() and target.stat().st_size == video.stat().st_size):
            shutil.copyfile(video, target)  # a rerun finds it in place and copies nothing
        placed += 1
    return placed


def default_classes(annotations: dict[str, Path]) -> list[str]:
    """The repository's 400 class names (sorted, as the official list), else the sorted labels
    of the downloaded CSVs."""
    shipped = Path(__file__).resolve().parents[2] / "data_lists" / "kinetics400" / "classes.txt"
    if shipped.is_file():
        return read_classes(shipped)
    labels = set()
    for csv_path in annotations.values():
        with open(csv_path, newline="", encoding="utf-8") as f:
            labels |= {row["label"] for row in csv.DictReader(f) if row.get("label")}
    return sorted(labels)


def build_lists(out: Path, annotations: dict[str, Path], classes: list[str], summary) -> None:
    """``videogn-data build`` for every split: ``OUT/{split}/{split}.txt`` (and the missing
    clips in ``{split}.missing.csv``)."""
    for split, csv_path in annotations.items():
        with open(csv_path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if "label" not in header:  # the official test CSV: clips without labels
            logger.warning("%s has no label column: no %s list built", csv_path, split)
            continue
        found, rows = write_kinetics_list(
            csv_path,
            classes,
            out / split,
            out / split / f"{split}.txt",
            missing_path=out / split / f"{split}.missing.csv",
        )
        summary.lists[split] = (found, rows)


def download_kinetics400(
    out: str | Path,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    workers: int = 4,
    base_url: str = OFFICIAL_BASE_URL,
    classes: list[str] | None = None,
    progress: bool = True,
    delete_archives: bool = False,
) -> DownloadSummary:
    """Fetch, extract, repair and list Kinetics-400 under ``out`` (see the module docstring).

    Raises:
        DownloadError: an address is missing or failing (the message names it).
        ValueError: an unknown split.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"unknown split(s) {unknown}; choose from {', '.join(SPLITS)}")
    out, base = Path(out), base_url.rstrip("/")
    summary = DownloadSummary()
    annotations = {s: out / "annotations" / f"{s}.csv" for s in splits}
    for split, path in annotations.items():
        fetch_small(f"{base}/annotations/{split}.csv", path)
    jobs = [(a, out / s) for s in splits for a in list_archives(base, s, out)]
    transfer = Transfer(out, summary, progress)
    try:
        run_parallel(transfer, jobs, workers, delete_archives)
        replacement_dir = out / "archives" / "replacement"
        replacement = Archive(f"{base}/{REPLACEMENT}", replacement_dir / REPLACEMENT, "replacement")
        run_parallel(transfer, [(replacement, replacement_dir / "videos")], 1, False)
    finally:
        transfer.bar.close()
    summary.replaced = route_replacements(replacement_dir / "videos", out, annotations)
    classes = classes or default_classes(annotations)
    (out / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    build_lists(out, annotations, classes, summary)
    return summary
