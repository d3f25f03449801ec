"""`videogn-train data.backend=decord` and `videogn-data check --backend decord` on a machine
without decord: they stop before reading a video, with the install hint (decord has no wheels
for ARM Linux or Apple silicon, so pyproject installs it only where it has)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

HINT = (
    "decord is not installed (it ships wheels for x86-64 Linux/Windows only); pip install "
    "decord, or use the pyav backend (data.backend=pyav)"
)
# After the conftest's WITHOUT_DECORD prelude: runs `python -m MODULE ARGS...` in that child.
RUN_MODULE = textwrap.dedent(
    """
    import runpy, sys

    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__")
    """
)


def test_train_without_decord_names_the_fix(tmp_path, without_decord):
    demo = {
        "train_videos_per_class": 1,
        "val_videos_per_class": 1,
        "frames_per_video": 24,
        "frame_size": 32,
        "event_gap": 8,
        "event_length": 2,
    }
    overrides = [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.demo.cache_dir={tmp_path / 'demo'}",
        *(f"data.demo.params.{key}={value}" for key, value in demo.items()),
        "data.num_classes=4",
        "data.num_workers=0",
        "data.backend=decord",
    ]
    child = subprocess.run(
        [sys.executable, "-c", without_decord + RUN_MODULE, "videogn.cli.train", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode != 0
    errors = [line for line in child.stderr.splitlines() if "Error:" in line]
    assert errors[-1].endswith(f"BackendNotInstalledError: {HINT}"), child.stderr[-2000:]
    assert (tmp_path / "run" / "config.yaml").is_file()  # the run started ...
    assert not list((tmp_path / "run").rglob("*.pt"))  # ... and stopped before any training


def test_data_check_without_decord_names_the_fix(tmp_path, without_decord):
    listing = tmp_path / "list.txt"
    listing.write_text("missing.mp4 0\n")
    child = subprocess.run(
        [sys.executable, "-c", without_decord + RUN_MODULE, "videogn.cli.data", "check",
         str(listing), "--backend", "decord", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 2, child.stderr
    assert child.stderr.strip() == f"videogn-data check: error: {HINT}"
    assert not (tmp_path / "list.report.tsv").exists()  # no video was declared unreadable
