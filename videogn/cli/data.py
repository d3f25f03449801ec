"""`videogn-data`: build Kinetics lists, check videos, re-encode them, generate the demo dataset."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """examples:
  # train list from the official CSV and a folder of downloaded clips
  videogn-data build --csv kinetics400/train.csv --videos /data/k400/train \\
      --classes data_lists/kinetics400/classes.txt --out data_lists/kinetics400/train.txt

  # probe every video (4 processes); writes train.report.tsv and train.clean.txt
  videogn-data check data_lists/kinetics400/train.txt --root /data/k400/train --workers 4

  # re-encode for fast clip decoding (short side 256, keyframe every 16 frames); resumable
  videogn-data prepare data_lists/kinetics400/train.clean.txt --root /data/k400/train \
      --out /data/k400_256/train --workers 8

  # generate (or reuse) the built-in demo dataset
  videogn-data demo --cache-dir .cache/videogn

  # Kinetics-400 from the official archives: resumable, parallel, extracted, repaired, listed
  videogn-data download kinetics400 --out /data/k400 --splits train,val --workers 8
"""


def _add_build(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a `path label` list from a Kinetics CSV and a folder of clips",
        description="Match the rows of an official Kinetics annotation CSV to downloaded clips "
        "named <youtube_id>_<start:06d>_<end:06d>.<ext> or <class dir>/<youtube_id>.<ext> "
        "(mp4, mkv or webm) and write a `path label` list; report the missing clips.",
    )
    p.add_argument(
        "--csv", required=True, help="official annotation CSV (label,youtube_id,time_start,...)"
    )
    p.add_argument("--videos", required=True, help="folder holding the downloaded clips")
    p.add_argument(
        "--classes", default="data_lists/kinetics400/classes.txt", help="class names, one per line"
    )
    p.add_argument("--out", required=True, help="list to write")
    p.add_argument("--split", default=None, help="keep only CSV rows of this split (e.g. train)")
    p.add_argument("--missing", default=None, help="also write the missing clips here (CSV rows)")
    p.add_argument(
        "--absolute",
        action="store_true",
        help="write absolute paths instead of paths relative to --videos",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: no limit), got '{text}'")
    return value


def _add_check(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="probe every video of a list; write a report and a clean list",
        description="Open every video of LIST in parallel, decode its first and last frames "
        "(every frame with --full), and write a TSV report (path, status, reason, frames, fps, "
        "width, height) and a clean list without unreadable or too-short videos.",
    )
    p.add_argument("list", help="`path label` list to check")
    p.add_argument(
        "--root", default=None, help="folder that relative paths in LIST are relative to"
    )
    p.add_argument("--backend", default="pyav", choices=("pyav", "decord"))
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    p.add_argument(
        "--min-frames",
        type=int,
        default=64,
        help="videos with fewer frames are 'short' and left out of the clean list "
        "(default 64: a 32x2 window)",
    )
    p.add_argument(
        "--full", action="store_true", help="decode every frame, not only the first and last"
    )
    p.add_argument(
        "--timeout-s",
        type=_seconds,
        default=60.0,
        help="a video whose check takes longer is 'unreadable' (a decoder that hangs on it); "
        "0: no limit (default 60)",
    )
    p.add_argument("--report", default=None, help="report path (default: LIST with .report.tsv)")
    p.add_argument(
        "--clean-list", default=None, help="clean list path (default: LIST with .clean.txt)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_prepare(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="re-encode the videos of a list for fast clip decoding; write a new list",
        description="Re-encode every video of LIST (H.264, short side --short-side, a keyframe "
        "every --gop frames, every frame kept) into --out, in parallel with a progress bar. "
        "Resumable: finished outputs are skipped (each is written under a temporary name and "
        "renamed). Writes a list of the prepared videos (paths relative to --out) and a TSV "
        "of the failures.",
    )
    p.add_argument("list", help="`path label` list of the source videos")
    p.add_argument(
        "--root", default=None, help="folder that relative paths in LIST are relative to"
    )
    p.add_argument("--out", required=True, help="output folder (same sub-folders as LIST)")
    p.add_argument("--out-list", default=None, help="new list (default: OUT/<LIST file name>)")
    p.add_argument("--short-side", type=int, default=256, help="256 or 320 (default 256)")
    p.add_argument("--gop", type=int, default=16, help="keyframe interval in frames")
    p.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default 23)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (speed of encoding)")
    p.add_argument(
        "--tune",
        default=None,
        help="x264 tune, e.g. fastdecode (no CABAC or deblocking: faster decoding, larger files)",
    )
    p.add_argument(
        "--no-upscale", action="store_true", help="keep videos smaller than --short-side as is"
    )
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate (or reuse) the built-in synthetic demo dataset",
        description="Write the deterministic demo dataset (H.264 videos and Kinetics-style lists) "
        "under CACHE_DIR/demo_<hash>/ and print where it is.",
    )
    p.add_argument("--cache-dir", default=".cache/videogn", help="parent folder of the dataset")
    p.add_argument("--num-classes", type=int, default=8)
    p.add_argument("--frames-per-video", type=int, default=48)
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--event-gap", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)


def _add_download(subparsers) -> None:
    p = subparsers.add_parser(
        "download",
        help="download Kinetics-400 from the official archives and build its lists",
        description="Fetch the official Kinetics-400 tarballs (the CVDF's path lists), the "
        "annotation CSVs and the replacement archive for corrupted videos; resumable at the "
        "byte and at the file, in parallel, with a progress bar. Each archive is extracted as "
        "it completes (members that would land outside --out are refused and reported), the "
        "replacement videos are applied, and `videogn-data build` writes OUT/{split}/{split}.txt: "
        "then `videogn-train ... data.root=OUT`.",
    )
    p.add_argument("dataset", choices=("kinetics400",))
    p.add_argument("--out", required=True, help="output folder (see the layout in --help)")
    p.add_argument("--splits", default="train,val", help="comma-separated: train, val, test")
    p.add_argument("--workers", type=int, default=4, help="parallel transfers (default 4)")
    p.add_argument(
        "--base-url", default=None, help="a mirror of https://s3.amazonaws.com/kinetics/400"
    )
    p.add_argument("--classes", default=None, help="class names (default: the 400 of Kinetics)")
    p.add_argument(
        "--delete-archives", action="store_true", help="delete each tarball once extracted"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_download(args) -> int:
    from videogn.data.kinetics_download import OFFICIAL_BASE_URL, download_kinetics400
    from videogn.data.lists import read_classes
    from videogn.utils.http_download import DownloadError

    try:
        summary = download_kinetics400(
            args.out,
            splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
            workers=args.workers,
            base_url=args.base_url or OFFICIAL_BASE_URL,
            classes=read_classes(args.classes) if args.classes else None,
            progress=not args.no_progress,
            delete_archives=args.delete_archives,
        )
    except DownloadError as e:
        raise DownloadError(f"{e}\n(the same command continues where this run stopped)") from e
    print(
        f"archives: {len(summary.fetched)} fetched, {len(summary.skipped)} complete from an "
        f"earlier run, {len(summary.refetched)} corrupt and fetched again; "
        f"{summary.replaced} replacement videos applied"
    )
    for archive, member, reason in summary.refused:
        print(f"refused {archive}: {member} ({reason}); not written")
    for split in (s.strip() for s in args.splits.split(",") if s.strip()):
        if split not in summary.lists:
            print(f"{split}: clips downloaded; no list (its CSV has no label column)")
            continue
        found, rows = summary.lists[split]
        list_path = Path(args.out) / split / f"{split}.txt"
        print(f"{split}: {found} of {rows} annotated clips listed in {list_path}")
    print(f"next: videogn-data check LIST --root DIR, then videogn-train ... data.root={args.out}")
    return 0


def run_build(args) -> int:
    from videogn.data.kinetics import write_kinetics_list
    from videogn.data.lists import read_classes

    found, rows = write_kinetics_list(
        args.csv,
        read_classes(args.classes),
        args.videos,
        args.out,
        split=args.split,
        missing_path=args.missing,
        absolute=args.absolute,
    )
    print(f"wrote {found} of {rows} clips to {args.out}; {rows - found} missing")
    if args.missing:
        print(f"missing clips listed in {args.missing}")
    return 0


def run_check(args) -> int:
    from videogn.data.check import check_videos, clean_records, summarize, write_report
    from videogn.data.lists import VideoRecord, write_video_list

    records = _read_list_as_written(args.list)
    resolved = [
        r.path if args.root is None or os.path.isabs(r.path) else os.path.join(args.root, r.path)
        for r in records
    ]
    results = check_videos(
        [(r.path, p) for r, p in zip(records, resolved, strict=True)],
        backend=args.backend,
        min_frames=args.min_frames,
        full=args.full,
        workers=args.workers,
        progress=not args.no_progress,
        timeout_s=args.timeout_s or None,
    )
    stem = Path(args.list).with_suffix("")
    report = args.report or f"{stem}.report.tsv"
    clean_list = args.clean_list or f"{stem}.clean.txt"
    write_report(results, report)
    clean = clean_records(records, results)
    write_video_list([VideoRecord(r.path, r.label) for r in clean], clean_list)
    print(summarize(results))
    print(f"report: {report}\nclean list ({len(clean)} videos): {clean_list}")
    return 0


def _read_list_as_written(list_path: str) -> list:
    from videogn.data.lists import parse_list_line

    records = []
    with open(list_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            record = parse_list_line(line, source=list_path, line_no=line_no)
            if record is not None:
                records.append(record)
    return records


def run_prepare(args) -> int:
    from videogn.data.lists import write_video_list
    from videogn.data.prepare import PrepareSettings, prepare_dataset, prepared_records

    if not os.path.isfile(args.list):
        raise FileNotFoundError(f"video list {args.list} does not exist")
    records = _read_list_as_written(args.list)
    settings = PrepareSettings(
        short_side=args.short_side,
        gop=args.gop,
        crf=args.crf,
        preset=args.preset,
        upscale=not args.no_upscale,
        tune=args.tune,
    )
    results = prepare_dataset(
        records,
        args.out,
        root=args.root,
        settings=settings,
        workers=args.workers,
        progress=not args.no_progress,
    )
    out_list = args.out_list or os.path.join(args.out, Path(args.list).name)
    kept = prepared_records(records, results)
    write_video_list(kept, out_list)
    failures = [r for r in results if r.status == "failed"]
    failures_path = f"{Path(out_list).with_suffix('')}.failures.tsv"
    with open(failures_path, "w", encoding="utf-8") as f:
        f.write("path\treason\n")
        for r in failures:
            f.write(f"{r.path}\t{r.reason}\n")
    counts = {s: sum(r.status == s for r in results) for s in ("prepared", "skipped", "failed")}
    print(
        f"{len(results)} videos: {counts['prepared']} prepared, {counts['skipped']} already "
        f"done, {counts['failed']} failed (listed in {failures_path})"
    )
    print(f"new list ({len(kept)} videos, paths relative to {args.out}): {out_list}")
    return 0


def run_demo(args) -> int:
    from videogn.data.demo import ensure_demo_dataset

    demo = ensure_demo_dataset(
        args.cache_dir,
        num_classes=args.num_classes,
        frames_per_video=args.frames_per_video,
        frame_size=args.frame_size,
        event_gap=args.event_gap,
        seed=args.seed,
    )
    print(
        f"demo dataset: {demo.root}\n  train list: {demo.train_list}\n  val list: {demo.val_list}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="videogn-data",
        description="Data tools for videogn: Kinetics download and lists, video checks, "
        "re-encoding, the demo dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_build(subparsers)
    _add_check(subparsers)
    _add_prepare(subparsers)
    _add_demo(subparsers)
    _add_download(subparsers)
    args = parser.parse_args(argv)
    runners = {
        "build": run_build,
        "check": run_check,
        "prepare": run_prepare,
        "demo": run_demo,
        "download": run_download,
    }
    runner = runners[args.command]
    from videogn.data.video_reader import BackendNotInstalledError  # light: numpy only
    from videogn.utils.http_download import DownloadError

    try:
        return runner(args)
    except (FileNotFoundError, ValueError, BackendNotInstalledError, DownloadError) as err:
        print(f"videogn-data {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
