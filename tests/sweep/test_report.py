"""Table 8 from run directories: paper numbers beside each cell, seeds averaged, and runs that
are missing, failed or untested shown as such (never as a zero). The run directories are
written with the real resolved configs of the Table 8 experiments, as videogn-train writes
them; only the numbers are chosen here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from videogn.config import CONFIG_DIR, register_configs
from videogn.sweep.cells import TABLE8
from videogn.sweep.report import match_runs
from videogn.sweep.runs import find_run_dirs, read_run, read_runs
from videogn.sweep.table8 import report_table8

register_configs()


@pytest.fixture(scope="module")
def write_run():
    """(directory, experiment, seed, results | None, metrics records) -> a run directory."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):

        def write(run_dir: Path, experiment: str, seed=0, results=None, metrics=(), ckpt=None):
            overrides = [f"experiment={experiment}", "data.root=/k400", f"seed={seed}"]
            cfg = compose("train", overrides=overrides)
            run_dir.mkdir(parents=True)
            OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
            if results is not None:
                (run_dir / "results.json").write_text(json.dumps(results))
            lines = [json.dumps(m) for m in metrics]
            (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            if ckpt is not None:
                (run_dir / "checkpoints").mkdir()
                (run_dir / "checkpoints" / f"iter_{ckpt:08d}.pt").write_bytes(b"")
            return run_dir

        yield write


def results_of(top1, top5):
    return {"video_top1": top1, "video_top5": top5, "clip_top1": top1 - 5,
            "videos_evaluated": 19000, "videos_listed": 19000}  # fmt: skip


def test_cells_show_paper_numbers_and_differences(tmp_path, write_run):
    write_run(tmp_path / "a", "table8/bn_32x2_bs8", results=results_of(72.8, 90.5))
    write_run(tmp_path / "b", "table8/gn_64x1_bs4", results=results_of(75.0, 92.0))
    text = report_table8([tmp_path], tmp_path / "t8.md", tmp_path / "t8.png")
    bn_row = next(line for line in text.splitlines() if line.startswith("| BN |"))
    gn_row = next(line for line in text.splitlines() if line.startswith("| GN |"))
    assert "**72.8** / 90.5<br>paper 73.3 / 90.7, Δ −0.5 / −0.2" in bn_row
    assert "**75.0** / 92.0<br>paper 74.5 / 91.7, Δ +0.5 / +0.3" in gn_row
    assert (tmp_path / "t8.md").read_text().startswith("# Table 8")
    assert (tmp_path / "t8.png").stat().st_size > 1000


def test_missing_failed_and_untested_runs_are_not_zeros(tmp_path, write_run):
    write_run(tmp_path / "ok", "table8/bn_32x2_bs8", results=results_of(73.1, 90.2))
    nan = {"phase": "error", "step": 1234, "error": "non-finite loss at iteration 1234\n..."}
    write_run(tmp_path / "nan", "table8/bn_32x2_bs4", metrics=[nan], ckpt=1000)
    write_run(tmp_path / "cut", "table8/gn_32x2_bs8", ckpt=5000)
    no_video = {"videos_evaluated": 0, "videos_listed": 10, "failures": []}
    write_run(tmp_path / "empty", "table8/gn_32x2_bs4", results=no_video)
    results, unmatched = match_runs(TABLE8, read_runs([tmp_path]))
    status = {r.cell.experiment: r.status() for r in results}
    assert status["table8/bn_32x2_bs8"] == "done"
    assert status["table8/bn_32x2_bs4"] == "failed (non-finite loss at iteration 1234)"
    assert status["table8/gn_32x2_bs8"] == (
        "incomplete (no test results; last checkpoint at iteration 5000)"
    )
    assert status["table8/gn_32x2_bs4"] == "failed (no video could be tested)"
    assert status["table8/bn_64x1_bs4"] == status["table8/gn_64x1_bs4"] == "missing"
    assert unmatched == []

    text = report_table8([tmp_path], tmp_path / "t8.md", tmp_path / "t8.png")
    table = text.split("## Runs")[0]
    assert table.count("*missing*") == 2 and "*failed (non-finite loss" in table
    assert "0.0" not in table  # no number was made up for the cells without a result
    assert (tmp_path / "t8.png").is_file()


def test_seeds_are_averaged_with_their_spread(tmp_path, write_run):
    for seed, top1 in enumerate((72.0, 74.0)):
        write_run(tmp_path / f"s{seed}", "table8/gn_32x2_bs8", seed, results=results_of(top1, 91.0))
    text = report_table8([tmp_path], tmp_path / "t8.md", tmp_path / "t8.png")
    assert "**73.0** / 91.0 (±1.4, n=2)" in text


def test_run_records_read_the_cell_from_the_resolved_config(tmp_path, write_run):
    run = read_run(write_run(tmp_path / "r", "table8/gn_64x1_bs4", results=results_of(70, 90)))
    assert (run.norm, run.clip, run.batch, run.dataset) == ("gn", "64x1", 4, "kinetics400")
    assert run.pretrained is None  # VIDEOGN_PRETRAINED_GN unset in the test environment


def test_find_run_dirs_explains_a_wrong_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_dirs([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no run directory"):
        find_run_dirs([tmp_path])
