"""`videogn-data build` and `videogn-data check`."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from videogn.cli.data import main
from videogn.data.lists import read_video_list
from videogn.data.video_writer import write_video

CSV_TEXT = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,0wR5jVB-WPk,417,427,train,0
"arm wrestling",-abcDEF_123,12,22,train,0
"passing American football (in game)",xyz987,3,13,train,1
"massaging person's head",mph000,0,10,train,0
abseiling,gone0000000,5,15,train,0
abseiling,valonly0000,5,15,val,0
"""


def make_videos_dir(tmp_path):
    """Empty files are enough: `build` matches names, it does not decode."""
    videos = tmp_path / "videos"
    for rel in (
        "abseiling/0wR5jVB-WPk_000417_000427.mp4",  # scheme 1 inside a class folder
        "arm_wrestling/-abcDEF_123.mkv",  # scheme 2, underscores for spaces
        "passing American football (in game)/xyz987.webm",  # scheme 2, verbatim name
        "mph000_000000_000010.mp4",  # scheme 1, flat
        "unrelated/notes.txt",
    ):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"")
    return videos


def test_build_matches_both_naming_schemes_and_reports_missing(tmp_path, capsys):
    (tmp_path / "train.csv").write_text(CSV_TEXT)
    videos = make_videos_dir(tmp_path)
    out, missing = tmp_path / "train.txt", tmp_path / "missing.csv"
    args = ["build", "--csv", str(tmp_path / "train.csv"), "--videos", str(videos)]
    code = main(args + ["--out", str(out), "--split", "train", "--missing", str(missing)])
    assert code == 0
    assert "wrote 4 of 5 clips" in capsys.readouterr().out
    records = read_video_list(out, root=videos)
    assert [(r.path, r.label) for r in records] == [
        (str(videos / "abseiling/0wR5jVB-WPk_000417_000427.mp4"), 0),
        (str(videos / "arm_wrestling/-abcDEF_123.mkv"), 6),
        (str(videos / "passing American football (in game)/xyz987.webm"), 208),
        (str(videos / "mph000_000000_000010.mp4"), 196),
    ]
    rows = list(csv.DictReader(missing.open()))
    assert [(r["label"], r["youtube_id"]) for r in rows] == [("abseiling", "gone0000000")]


def test_build_from_the_official_sample_csv(shared_dir, tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "abseiling").mkdir(parents=True)
    (videos / "abseiling" / "0wR5jVB-WPk.mp4").write_bytes(b"")
    (videos / "3caPS4FHFF8_000036_000046.webm").write_bytes(b"")
    out = tmp_path / "val.txt"
    csv_path = shared_dir / "kinetics400" / "annotation_format_sample.csv"
    assert main(["build", "--csv", str(csv_path), "--videos", str(videos), "--out", str(out)]) == 0
    assert "wrote 2 of 3 clips" in capsys.readouterr().out
    assert [r.label for r in read_video_list(out)] == [0, 0]


def test_build_rejects_unknown_labels_and_unlabelled_csv(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("label,youtube_id,time_start,time_end,split\nflying,x,1,2,t\n")
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nx,1,2,test\n")
    (tmp_path / "v").mkdir()
    for name, message in (("a.csv", "not in the class list"), ("test.csv", "missing column")):
        code = main(["build", "--csv", str(tmp_path / name), "--videos", str(tmp_path / "v"),
                     "--out", str(tmp_path / "o.txt")])  # fmt: skip
        assert code == 2 and message in capsys.readouterr().err


def frames(count: int) -> np.ndarray:
    """uint8 [count, 64, 96, 3]: a square moving over a gradient."""
    video = np.repeat(np.linspace(40, 200, 96, dtype=np.uint8)[None, None, :, None], 64, 1)
    video = np.repeat(np.repeat(video, 3, 3), count, 0)
    for i in range(count):
        video[i, 20:32, 4 * i : 4 * i + 12] = 250
    return video


def test_check_writes_report_and_clean_list(tmp_path, capsys, shared_videos):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "good clip.mp4", frames(12))
    write_video(root / "short.mp4", frames(3))
    (root / "text.mp4").write_text("not a video")
    shutil.copy(shared_videos / "decord_corrupted.mp4", root / "corrupted.mp4")
    listing = tmp_path / "all.txt"
    listing.write_text("good clip.mp4 1\nshort.mp4 2\n# comment\ntext.mp4 3\ncorrupted.mp4 4\n")
    code = main(["check", str(listing), "--root", str(root), "--workers", "2",
                 "--min-frames", "8", "--no-progress"])  # fmt: skip
    assert code == 0
    assert "ok 1, short 1, unreadable 2" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "all.report.tsv").open(), delimiter="\t"))
    by_path = {row["path"]: row for row in rows}
    assert list(by_path) == ["good clip.mp4", "short.mp4", "text.mp4", "corrupted.mp4"]
    good = by_path["good clip.mp4"]
    assert (good["status"], good["frames"], good["width"], good["height"]) == (
        "ok",
        "12",
        "96",
        "64",
    )
    assert float(good["fps"]) == 25.0
    assert (
        by_path["short.mp4"]["status"] == "short" and "3 frames" in by_path["short.mp4"]["reason"]
    )
    assert by_path["text.mp4"]["status"] == "unreadable" and by_path["text.mp4"]["reason"]
    assert "damaged" in by_path["corrupted.mp4"]["reason"]
    assert (tmp_path / "all.clean.txt").read_text() == "good clip.mp4 1\n"


@pytest.mark.parametrize("argv", [["--help"], ["build", "--help"], ["check", "--help"]])
def test_help_exits_cleanly_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "usage: videogn-data" in out
    if argv == ["--help"]:
        assert "examples:" in out and "videogn-data check" in out
