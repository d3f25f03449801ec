"""The backend registry: unknown names list the choices; a missing decord is a setup error
with an install hint, raised where the backend is chosen, never taken for a bad video.

decord's absence is simulated in a fresh interpreter whose import system cannot find it (a
`sys.meta_path` finder that refuses the name), as on a platform decord has no wheel for.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from videogn.data.decoders import BACKENDS, get_backend, open_video
from videogn.data.decord_backend import DecordReader
from videogn.data.pyav_backend import PyAVReader


def run_without_decord(prelude: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_registry_holds_both_readers_and_the_schema_offers_its_names():
    from videogn.config import Backend

    assert {"pyav": PyAVReader, "decord": DecordReader} == BACKENDS
    assert [member.name for member in Backend] == list(BACKENDS)


def test_unknown_backend_lists_the_valid_choices(odd_videos):
    with pytest.raises(ValueError, match=r"'opencv'; choose one of: pyav, decord"):
        get_backend("opencv")
    with pytest.raises(ValueError, match="choose one of: pyav, decord"):
        open_video(odd_videos["normal.mp4"], backend="opencv")


def test_missing_decord_fails_with_an_install_hint_wherever_the_backend_is_chosen(
    odd_videos, without_decord
):
    child = run_without_decord(
        without_decord,
        f"""
        from videogn.data.check import check_videos
        from videogn.data.dataset import VideoClipDataset, VideoTestDataset
        from videogn.data.decoders import BackendNotInstalledError, decode, get_backend
        from videogn.data.lists import VideoRecord

        path = {str(odd_videos["normal.mp4"])!r}
        assert decode(path, [3], backend="pyav").shape[0] == 1  # pyav alone still works
        attempts = {{
            "get_backend": lambda: get_backend("decord"),
            "decode": lambda: decode(path, [0], backend="decord"),
            "train dataset": lambda: VideoClipDataset(
                [VideoRecord(path, 0)], sampler=None, transform=None, backend="decord"
            ),
            "test dataset": lambda: VideoTestDataset(
                [VideoRecord(path, 0)], sampler=None, transform=None, backend="decord"
            ),
            "check": lambda: check_videos([(path, path)], backend="decord", progress=False),
        }}
        for where, attempt in attempts.items():
            try:
                attempt()
            except BackendNotInstalledError as err:
                assert isinstance(err, ImportError)
                print(where, "->", err)
            else:
                raise SystemExit(f"{{where}}: no error without decord")
        assert "decord" not in sys.modules
        """,
    )
    assert child.returncode == 0, child.stderr
    lines = child.stdout.strip().splitlines()
    assert len(lines) == 5
    for line in lines:
        assert line.endswith(
            "decord is not installed (it ships wheels for x86-64 Linux/Windows only); "
            "pip install decord, or use the pyav backend (data.backend=pyav)"
        ), line
