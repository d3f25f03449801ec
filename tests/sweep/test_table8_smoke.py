"""``videogn-sweep table8 --smoke --extended``: the six Table 8 runs and the three beyond the
paper through a real hydra multirun at toy scale, the report written from their directories,
a relaunch that skips finished cells, a run gone missing, and the clip-length sweep on one of
the trained checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videogn.sweep.cells import TABLE8, TABLE8_EXTENDED

pytestmark = pytest.mark.slow

NAMES = [cell.experiment.split("/")[1] for cell in TABLE8]
EXTENDED_NAMES = [cell.experiment.split("/")[1] for cell in TABLE8_EXTENDED]


def sweep(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "videogn.cli.sweep", *args]
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("table8_smoke")
    result = sweep("table8", "--smoke", "--extended", "--sweep-dir", str(sweep_dir))
    assert result.returncode == 0, result.stdout[-6000:]
    return sweep_dir


def test_all_nine_cells_train_and_test(smoke_dir):
    for name in NAMES + EXTENDED_NAMES:
        results = json.loads((smoke_dir / f"table8_{name}" / "results.json").read_text())
        assert results["videos_evaluated"] == results["videos_listed"] == 8
        assert results["num_clips"] == 10
        norm, clip, _ = name.split("_")
        assert (results["norm"], results["clip"]) == (norm, clip)
    table = (smoke_dir / "table8.md").read_text()
    assert "paper 73.3 / 90.7" in table and "paper 74.5 / 91.7" in table
    assert "not at the paper's scale" in table and "*missing*" not in table
    assert (smoke_dir / "table8.png").stat().st_size > 1000
    # Figure 7 beside the table, linked from it, with a validation point per iteration
    assert "![Figure 7](figure7.png)" in table
    assert (smoke_dir / "figure7.png").stat().st_size > 1000
    assert "| GN | 64x1 | 4 | 1 |" in table  # the curves' table: one run of that cell
    # The cells beyond the paper: their own columns, and the planner's memory in every cell
    header = next(line for line in table.splitlines() if line.startswith("| norm |"))
    assert header.count("*beyond the paper*") == 2  # 64x1 at 8 per GPU, 128x1 at 4
    rows = [
        line for line in table.split("## Runs")[0].splitlines() if line[:5] in ("| BN ", "| GN ")
    ]
    assert sum(line.count("planner: ") for line in rows) == 9


def test_relaunch_skips_finished_cells(smoke_dir, tmp_path):
    (smoke_dir / "table8_gn_64x1_bs4" / "results.json").rename(tmp_path / "results.json")
    try:
        result = sweep("table8", "--smoke", "--dry-run", "--sweep-dir", str(smoke_dir))
        assert result.returncode == 0, result.stdout
        launched = next(line for line in result.stdout.splitlines() if line.startswith("+ "))
        assert "experiment=table8/gn_64x1_bs4 " in launched
        assert "bn_32x2_bs8" not in launched
    finally:
        (tmp_path / "results.json").rename(smoke_dir / "table8_gn_64x1_bs4" / "results.json")


def test_report_shows_a_missing_run_as_missing(smoke_dir, tmp_path):
    runs = [smoke_dir / f"table8_{name}" for name in NAMES if name != "bn_32x2_bs4"]
    partial = tmp_path / "partial"
    for run in runs:
        shutil.copytree(run, partial / run.name)
    (partial / "table8_gn_32x2_bs8" / "results.json").unlink()
    out = tmp_path / "t8.md"
    result = sweep("report", str(partial), "--out", str(out), "--no-memory")
    assert result.returncode == 0, result.stdout
    table = out.read_text().split("## Runs")[0]
    bn_row = next(line for line in table.splitlines() if line.startswith("| BN |"))
    gn_row = next(line for line in table.splitlines() if line.startswith("| GN |"))
    assert bn_row.split(" | ")[2] == "*missing*"
    assert "*incomplete (no test results" in gn_row.split(" | ")[1]
    assert (tmp_path / "t8.png").is_file()


def test_clip_length_sweep_on_a_trained_checkpoint(smoke_dir, tmp_path):
    run_dir = smoke_dir / "table8_gn_32x2_bs8"
    out = tmp_path / "cl"
    result = sweep("clip-length", str(run_dir), "--clips", "8x2,16x1,32x1",
                   "--num-clips", "1,3", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    summary = json.loads((out / "clip_length.json").read_text())
    settings = {(s["clip"], s["num_clips"]): s for s in summary["settings"]}
    assert settings[("8x2", 3)]["videos_evaluated"] == 8
    assert settings[("32x1", 1)]["videos_too_short"] == 8  # the smoke videos have 24 frames
    assert (out / "clip_length.png").is_file() and "| 8×2 |" in (out / "clip_length.md").read_text()
