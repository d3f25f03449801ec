"""``videogn-data download kinetics400`` against a local HTTP server serving a small fake
Kinetics in the official layout (path lists of full S3 addresses, tarballs of PyAV-encoded
clips with ``./`` members, the annotation CSVs, the replacement archive): a transfer cut in
the middle and one a killed run left are continued at the byte, a truncated and a corrupt
tarball are fetched again, a ``../`` member is refused and never written, the corrupted clip
is replaced, and the lists it builds decode through the training dataset. No internet."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from videogn.cli.data import main as data_main
from videogn.data.lists import read_video_list
from videogn.data.safe_extract import safe_extract
from videogn.data.video_writer import write_video
from videogn.doctor.loading import training_dataset

S3 = "https://s3.amazonaws.com/kinetics/400"
CLASSES = ("abseiling", "air drumming")
# split -> archive -> clips (youtube id, class index); "BROKEN" is the corrupted clip that the
# replacement archive repairs, as the CVDF's does for ~1300 training videos.
LAYOUT = {
    "train": {"part_0.tar.gz": [("trainAAAAA1", 0), ("trainBBBBB2", 1)],
              "part_1.tar.gz": [("trainCCCCC3", 0), ("BROKENxxxx4", 1)]},
    "val": {"part_0.tar.gz": [("valDDDDDD05", 0), ("valEEEEEE06", 1)]},
}  # fmt: skip


def stem(youtube_id: str) -> str:
    return f"{youtube_id}_000010_000020"


def clip_bytes(tmp: Path, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(20, 32, 40, 3), dtype=np.uint8)
    path = tmp / f"clip{seed}.mp4"
    write_video(path, frames, fps=10)
    return path.read_bytes()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def annotations(split: str, extra_missing: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
    for clips in LAYOUT[split].values():
        for youtube_id, label in clips:
            writer.writerow([CLASSES[label], youtube_id, 10, 20, split, 0])
    if extra_missing:  # a clip of the CSV that no archive holds (gone from YouTube)
        writer.writerow([CLASSES[0], "goneFFFFF07", 10, 20, split, 0])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def fake_kinetics(tmp_path_factory) -> dict[str, bytes]:
    """URL path (under /400) -> bytes of the fake dataset."""
    tmp = tmp_path_factory.mktemp("fake_k400")
    files, seed = {}, 0
    for split, archives in LAYOUT.items():
        urls = [f"{S3}/{split}/{name}" for name in archives]
        files[f"/400/{split}/k400_{split}_path.txt"] = ("\n".join(urls) + "\n").encode()
        files[f"/400/annotations/{split}.csv"] = annotations(split, split == "train")
        for name, clips in archives.items():
            members = {}
            for youtube_id, _ in clips:
                seed += 1
                data = b"\0moov atom not found" if youtube_id.startswith("BROKEN") else None
                members[f"./{stem(youtube_id)}.mp4"] = data or clip_bytes(tmp, seed)
            if split == "val":
                members["../escape.txt"] = b"outside"
            files[f"/400/{split}/{name}"] = tar_gz(members)
    repaired = {f"replacement_for_corrupted_k400/{stem('BROKENxxxx4')}.mp4": clip_bytes(tmp, 99)}
    files["/400/replacement_for_corrupted_k400.tgz"] = tar_gz(repaired)
    return files


def download(out: Path, base_url: str, *extra: str) -> int:
    args = ["download", "kinetics400", "--out", str(out), "--base-url", base_url]
    return data_main([*args, "--workers", "3", "--no-progress", *extra])


def test_download_resumes_repairs_refuses_and_lists(tmp_path, local_http, fake_kinetics, capsys):
    local_http.files.update(fake_kinetics)
    out = tmp_path / "k400"
    archives = out / "archives"
    train0, train1, val0 = (
        "/400/train/part_0.tar.gz",
        "/400/train/part_1.tar.gz",
        "/400/val/part_0.tar.gz",
    )
    local_http.cut_once[train0] = 3000  # the connection drops mid-transfer
    (archives / "train").mkdir(parents=True)
    (archives / "train" / "part_1.tar.gz.part").write_bytes(fake_kinetics[train1][:1000])  # killed
    (archives / "val").mkdir()
    (archives / "val" / "part_0.tar.gz").write_bytes(fake_kinetics[val0][:500])  # truncated

    assert download(out, local_http.url + "/400") == 0
    printed = capsys.readouterr().out
    ranges = {(p, r) for p, r in local_http.requests if p.endswith(".tar.gz")}
    assert (train0, "bytes=3000-") in ranges and (train1, "bytes=1000-") in ranges
    assert (val0, "bytes=500-") in ranges
    for split, archive_clips in LAYOUT.items():  # every archive whole on disk
        for name in archive_clips:
            assert (archives / split / name).read_bytes() == fake_kinetics[f"/400/{split}/{name}"]
    assert "refused part_0.tar.gz: ../escape.txt (path climbs out with '..')" in printed
    assert not list(tmp_path.rglob("escape.txt"))
    refused = (out / "refused_members.tsv").read_text()
    assert refused == "part_0.tar.gz\t../escape.txt\tpath climbs out with '..'\n"
    assert "1 replacement videos applied" in printed
    tgz = io.BytesIO(fake_kinetics["/400/replacement_for_corrupted_k400.tgz"])
    with tarfile.open(fileobj=tgz) as tar:
        replacement = tar.extractfile(tar.getmembers()[0]).read()
    assert (out / "train" / f"{stem('BROKENxxxx4')}.mp4").read_bytes() == replacement
    assert "train: 4 of 5 annotated clips listed" in printed and "val: 2 of 2" in printed

    records = read_video_list(out / "train" / "train.txt", out / "train")
    assert sorted(r.label for r in records) == [0, 0, 1, 1]
    dataset = training_dataset(records, num_frames=8, frame_interval=2, crop_size=24)
    for index in range(len(records)):  # every clip decodes, the repaired one included
        item = dataset[index]
        assert item["index"] == index and tuple(item["clip"].shape[-2:]) in ((24, 24), (24, 3))

    # A second run finds everything complete: no archive is requested again.
    local_http.requests.clear()
    assert download(out, local_http.url + "/400") == 0
    assert not [p for p, _ in local_http.requests if p.endswith((".tar.gz", ".tgz"))]
    assert "0 fetched, 4 complete from an earlier run" in capsys.readouterr().out


def test_a_corrupt_archive_of_the_right_size_is_fetched_again(tmp_path, local_http, fake_kinetics):
    local_http.files.update(fake_kinetics)
    val0 = fake_kinetics["/400/val/part_0.tar.gz"]
    bad = val0[:100] + bytes(len(val0) - 100)  # right size, zeros after 100 bytes
    (tmp_path / "k" / "archives" / "val").mkdir(parents=True)
    (tmp_path / "k" / "archives" / "val" / "part_0.tar.gz").write_bytes(bad)
    assert download(tmp_path / "k", local_http.url + "/400", "--splits", "val") == 0
    assert (tmp_path / "k" / "archives" / "val" / "part_0.tar.gz").read_bytes() == val0
    assert len(read_video_list(tmp_path / "k" / "val" / "val.txt")) == 2


def test_the_unlabelled_test_split_is_downloaded_without_a_list(
    tmp_path, local_http, fake_kinetics, capsys
):
    local_http.files.update(fake_kinetics)
    val = "/400/val/"
    for name, data in fake_kinetics.items():  # a test split: val's clips, no label column
        if name.startswith(val):
            local_http.files[name.replace(val, "/400/test/").replace("_val_", "_test_")] = data
    rows = fake_kinetics["/400/annotations/val.csv"].decode().splitlines()
    unlabelled = [",".join(row.split(",")[1:]) for row in rows]
    local_http.files["/400/annotations/test.csv"] = "\n".join(unlabelled).encode()
    assert download(tmp_path / "k", local_http.url + "/400", "--splits", "test") == 0
    assert "test: clips downloaded; no list" in capsys.readouterr().out
    assert len(list((tmp_path / "k" / "test").glob("*.mp4"))) == 2
    assert not (tmp_path / "k" / "test" / "test.txt").exists()


def test_a_missing_address_is_a_clear_error(tmp_path, local_http, capsys):
    assert download(tmp_path / "k", local_http.url + "/nothing") == 2
    error = capsys.readouterr().err
    assert f"{local_http.url}/nothing/annotations/train.csv: HTTP 404" in error


@pytest.mark.parametrize(
    "name, link, reason",
    [
        ("/abs/evil.txt", None, "absolute path"),
        ("a/../../evil.txt", None, "'..'"),
        ("link", "../../outside", "symbolic link pointing outside"),
        ("hard", "../outside", "hard link pointing outside"),
    ],
)
def test_unsafe_members_are_refused_and_never_written(tmp_path, name, link, reason):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member = tarfile.TarInfo(name)
        if link is not None:
            member.type = tarfile.SYMTYPE if name == "link" else tarfile.LNKTYPE
            member.linkname = link
        tar.addfile(member, io.BytesIO(b""))
    (tmp_path / "a.tar").write_bytes(buffer.getvalue())
    result = safe_extract(tmp_path / "a.tar", tmp_path / "dest")
    assert result.written == ["ok.txt"] and len(result.refused) == 1
    assert reason in result.refused[0][1]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["ok.txt"]
