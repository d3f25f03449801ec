"""Video lists and class files."""

from __future__ import annotations

from pathlib import Path

import pytest

from videogn.data.lists import VideoRecord, read_classes, read_video_list, write_video_list

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_list_parsing_handles_spaces_comments_blank_lines_and_root(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text(
        "# comment line\n"
        "\n"
        "abseiling/a b c.mp4 0\n"
        "  arm wrestling/x.mkv   6  \n"
        "/abs/path/v.webm 399\n"
        "\t\n"
    )
    records = read_video_list(listing, root="/data/k400")
    assert records == [
        VideoRecord("/data/k400/abseiling/a b c.mp4", 0),
        VideoRecord("/data/k400/arm wrestling/x.mkv", 6),
        VideoRecord("/abs/path/v.webm", 399),
    ]
    assert read_video_list(listing)[0].path == "abseiling/a b c.mp4"


@pytest.mark.parametrize(
    "line, match",
    [
        ("only_a_path.mp4", "expected 'path label'"),
        ("video.mp4 six", "integer label"),
        ("video.mp4 -1", ">= 0"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, line, match):
    listing = tmp_path / "bad.txt"
    listing.write_text(f"ok.mp4 1\n{line}\n")
    with pytest.raises(ValueError, match=match) as caught:
        read_video_list(listing)
    assert f"{listing}:2" in str(caught.value)


def test_missing_list_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_video_list(tmp_path / "nope.txt")


def test_write_then_read_round_trips(tmp_path):
    records = [VideoRecord("a dir/b c.mp4", 3), VideoRecord("x.mp4", 0)]
    assert write_video_list(records, tmp_path / "out" / "l.txt") == 2
    assert read_video_list(tmp_path / "out" / "l.txt") == records
    with pytest.raises(ValueError, match="cannot be written"):
        write_video_list([VideoRecord("trailing space ", 1)], tmp_path / "bad.txt")


def test_repo_kinetics_classes_are_the_400_standard_names(shared_dir):
    classes = read_classes(REPO_ROOT / "data_lists/kinetics400/classes.txt")
    assert len(classes) == 400 and len(set(classes)) == 400
    assert classes[0] == "abseiling" and classes[6] == "arm wrestling"
    assert classes == read_classes(shared_dir / "kinetics400/classes.txt")


def test_class_file_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="duplicate"):
        read_classes(tmp_path / "dup.txt")
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(ValueError, match="gap.txt:2"):
        read_classes(tmp_path / "gap.txt")
