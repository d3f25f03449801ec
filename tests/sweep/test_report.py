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

        def write(
            run_dir: Path, experiment: str, seed=0, results=None, metrics=(), ckpt=None, extra=()
        ):
            overrides = [f"experiment={experiment}", "data.root=/k400", f"seed={seed}", *extra]
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
    text = report_table8([tmp_path], tmp_path / "t8.md", tmp_path / "t8.png", plan_memory=False)
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

    text = report_table8([tmp_path], tmp_path / "t8.md", tmp_path / "t8.png", plan_memory=False)
    table = text.split("## Runs")[0]
    assert table.count("*missing*") == 2 and "*failed (non-finite loss" in table
    assert "0.0" not in table  # no number was made up for the cells without a result
    assert (tmp_path / "t8.png").is_file()


def test_seeds_are_averaged_with_their_spread(tmp_path, write_run):
    for seed, top1 in enumerate((72.0, 74.0)):
        write_run(tmp_path / f"s{seed}", "table8/gn_32x2_bs8", seed, results=results_of(top1, 91.0))
    text = report_table8([tmp_path], tmp_path / "t8.md", tmp_path / "t8.png", plan_memory=False)
    assert "**73.0** / 91.0 (±1.4, n=2)" in text


def test_run_records_read_the_cell_from_the_resolved_config(tmp_path, write_run, monkeypatch):
    monkeypatch.delenv("VIDEOGN_PRETRAINED_GN", raising=False)
    run = read_run(write_run(tmp_path / "r", "table8/gn_64x1_bs4", results=results_of(70, 90)))
    assert (run.norm, run.clip, run.batch, run.dataset) == ("gn", "64x1", 4, "kinetics400")
    assert run.pretrained == "detectron:R-50-GN"  # the cell's named default, variable unset
    scratch = write_run(tmp_path / "s", "table8/bn_32x2_bs8", extra=["model.pretrained=none"])
    assert read_run(scratch).pretrained is None  # explicit scratch reads as scratch
    text = report_table8([scratch], tmp_path / "t8.md", tmp_path / "t8.png", plan_memory=False)
    assert "1 Kinetics run(s) started from scratch" in text


def test_find_run_dirs_explains_a_wrong_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_dirs([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no run directory"):
        find_run_dirs([tmp_path])


# A reduced model at a small crop: the planner's figures in seconds, not minutes.
TOY = ("model=i3d_tiny", "data.crop_size=32")


def test_extended_cells_are_columns_beyond_the_paper_with_the_planners_memory(tmp_path, write_run):
    from videogn.engine.memory_setup import config_memory
    from videogn.memory.estimate import GIB

    write_run(tmp_path / "a", "table8/gn_32x2_bs8", results=results_of(73.5, 91.0), extra=TOY)
    run = write_run(tmp_path / "b", "table8/gn_64x1_bs8", results=results_of(75.5, 92.0), extra=TOY)
    write_run(tmp_path / "c", "table8/gn_128x1_bs4", ckpt=100, extra=TOY)
    # A budget between the toy's needs without and with checkpointing: auto must checkpoint.
    cfg = OmegaConf.load(run / "config.yaml")
    needs = {}
    for setting in ("none", "all"):
        cfg.trainer.activation_checkpointing = setting
        needs[setting] = config_memory(cfg, 8).bytes_per_gpu
    cfg.trainer.activation_checkpointing = "auto"
    cfg.data.memory_budget_gb = (needs["none"] + needs["all"]) / 2 / GIB
    OmegaConf.save(cfg, run / "config.yaml")
    memory = config_memory(cfg, 8)
    assert memory.policy == "auto" and memory.stages and memory.bytes_per_gpu < needs["none"]

    text = report_table8(
        [tmp_path], tmp_path / "t8.md", tmp_path / "t8.png", extended=None, plan_memory="runs"
    )
    table = text.split("## Runs")[0]
    header = next(line for line in table.splitlines() if line.startswith("| norm |"))
    assert "64×1, 8/GPU (*beyond the paper*)" in header
    assert "128×1, 4/GPU (*beyond the paper*)" in header and "32×2, 8/GPU |" in header
    gn_row = next(line for line in table.splitlines() if line.startswith("| GN |")).split(" | ")
    expected = f"planner: {memory.bytes_per_gpu / GIB:.2f} GiB/GPU, checkpointing"
    assert "**75.5** / 92.0<br>" + expected in gn_row[4] and "(auto, +" in gn_row[4]
    assert "paper" not in gn_row[4] and "*incomplete" in gn_row[5] and "planner:" in gn_row[5]
    assert "planner:" in gn_row[1] and "paper 73.0 / 90.6" in gn_row[1]
    assert "*missing*" in gn_row[2] and "planner" not in gn_row[2]  # not planned: "runs" only


@pytest.mark.slow
def test_a_cell_without_a_run_is_planned_from_its_experiment_at_the_papers_scale():
    from videogn.memory.estimate import GIB, estimate_memory
    from videogn.sweep.planned import experiment_config, planned_memory_note

    cell = TABLE8[0]  # BN 32x2, 8 clips per GPU, fp32, no checkpointing
    estimate = estimate_memory({"name": "i3d_r50", "norm": "bn"}, num_frames=32, crop_size=224)
    note = planned_memory_note(experiment_config(cell), cell.batch)
    assert note == f"planner: {estimate.total_bytes(8) / GIB:.2f} GiB/GPU"
