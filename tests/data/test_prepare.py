"""`videogn-data prepare`: re-encoded videos keep every frame, get dense keyframes, resume."""

from __future__ import annotations

import os

import numpy as np
import pytest

from videogn.cli.data import main
from videogn.data.decoders import decode, probe
from videogn.data.lists import VideoRecord, read_video_list
from videogn.data.prepare import (
    PrepareSettings,
    output_name,
    prepare_dataset,
    prepared_records,
    scaled_size,
)

SMALL = PrepareSettings(short_side=64, gop=8, crf=12)  # the generated videos are 64x96


@pytest.fixture
def source_list(odd_videos, tmp_path):
    """A list over generated videos: plain, VFR, AVI with B-frames, rotated, and a text file."""
    names = ["normal.mp4", "vfr.mp4", "bframes.avi", "rot90.mp4", "text.mp4"]
    root = odd_videos["normal.mp4"].parent
    list_path = tmp_path / "train.txt"
    list_path.write_text("".join(f"{name} {label}\n" for label, name in enumerate(names)))
    return list_path, root


def test_prepared_videos_keep_every_frame_with_a_keyframe_every_gop(
    source_list, tmp_path, frame_number
):
    list_path, root = source_list
    records = read_video_list(list_path)
    out = tmp_path / "prepared"
    results = prepare_dataset(records, out, root=root, settings=SMALL, progress=False)
    assert [r.status for r in results] == ["prepared"] * 4 + ["failed"]
    assert "cannot open" in results[-1].reason
    for result in results[:4]:
        info = probe(out / result.output)
        assert info.num_frames == result.frames == 40
        assert info.keyframes == (0, 8, 16, 24, 32)
        assert info.rotation == 0 and info.codec == "h264"
        frames = decode(out / result.output, np.arange(40))
        upright = 3 if result.path == "rot90.mp4" else 0  # the code is written unrotated
        numbers = [frame_number(np.rot90(f, k=upright)) for f in frames]
        assert numbers == list(range(40)), result.path
    # Rotation is applied, not carried as metadata: 64x96 stored at 90 degrees shows 96x64.
    assert probe(out / "rot90.mp4").height == 96 and probe(out / "rot90.mp4").width == 64
    assert probe(out / "normal.mp4").fps == pytest.approx(probe(root / "normal.mp4").fps)
    kept = prepared_records(records, results)
    assert [(r.path, r.label) for r in kept] == [
        ("normal.mp4", 0),
        ("vfr.mp4", 1),
        ("bframes.mp4", 2),
        ("rot90.mp4", 3),
    ]
    assert not [p for p in os.listdir(out) if "partial" in p]


def test_prepare_resumes_and_refuses_other_settings(source_list, tmp_path):
    list_path, root = source_list
    records = read_video_list(list_path)[:2]
    out = tmp_path / "prepared"
    prepare_dataset(records, out, root=root, settings=SMALL, progress=False)
    mtimes = {p: os.path.getmtime(out / p) for p in ("normal.mp4", "vfr.mp4")}
    (out / "vfr.mp4").unlink()
    (out / ".vfr.mp4.123.partial.mp4").write_bytes(b"left by a killed run")
    results = prepare_dataset(records, out, root=root, settings=SMALL, progress=False)
    assert [r.status for r in results] == ["skipped", "prepared"]
    assert os.path.getmtime(out / "normal.mp4") == mtimes["normal.mp4"]
    assert probe(out / "vfr.mp4").num_frames == 40
    assert not (out / ".vfr.mp4.123.partial.mp4").exists()
    with pytest.raises(ValueError, match="prepared with"):
        prepare_dataset(records, out, root=root, settings=PrepareSettings(), progress=False)


def test_cli_prepare_in_parallel_writes_list_and_failures(source_list, tmp_path, capsys):
    list_path, root = source_list
    out = tmp_path / "prepared"
    argv = ["prepare", str(list_path), "--root", str(root), "--out", str(out), "--workers", "2"]
    argv += ["--short-side", "32", "--gop", "4", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 prepared" in printed and "1 failed" in printed
    records = read_video_list(out / "train.txt", root=out)
    assert len(records) == 4
    info = probe(records[0].path)
    assert (info.height, info.width) == (32, 48) and info.keyframes[:3] == (0, 4, 8)
    failures = (out / "train.failures.tsv").read_text().splitlines()
    assert failures[0] == "path\treason" and failures[1].startswith("text.mp4\t")
    assert main(argv) == 0
    assert "0 prepared, 4 already done" in capsys.readouterr().out


def test_output_names_and_sizes():
    assert output_name("a b/clip.mkv", None) == "a b/clip.mp4"
    assert output_name("/data/k400/x/clip.webm", "/data/k400") == "x/clip.mp4"
    assert output_name("/elsewhere/clip.mp4", "/data/k400") == "elsewhere/clip.mp4"
    assert scaled_size(240, 426, 256) == (256, 454)
    assert scaled_size(1920, 1080, 320) == (568, 320)
    assert scaled_size(240, 426, 256, upscale=False) == (240, 426)
    assert scaled_size(135, 241, 256, upscale=False) == (134, 240)


def test_the_long_side_is_truncated_to_even_as_the_nonlocal_preparation():
    """ffmpeg scale="trunc(oh*a/2)*2:256": 4:3 -> 256x340 (not 342), 16:9 -> 256x454,
    portrait 3:4 -> 340x256, and an exact even size stays (4:3 at 240 -> 320)."""
    assert scaled_size(240, 320, 256) == (256, 340)
    assert scaled_size(480, 640, 256) == (256, 340)
    assert scaled_size(1080, 1920, 256) == (256, 454)
    assert scaled_size(640, 480, 256) == (340, 256)
    assert scaled_size(480, 640, 240) == (240, 320)


def test_bad_settings_and_colliding_outputs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="short_side"):
        PrepareSettings(short_side=255)
    with pytest.raises(ValueError, match="gop"):
        PrepareSettings(gop=0)
    records = [VideoRecord("a/clip.mkv", 0), VideoRecord("a/clip.webm", 1)]
    with pytest.raises(ValueError, match="would both be written"):
        prepare_dataset(records, tmp_path, settings=SMALL, progress=False)
