"""The mini Table 8 pipeline at toy scale: 2D pretraining saved in torchvision's layout,
inflated by videogn-inflate, two cells trained and tested as separate processes, a rerun that
skips them, and the report with n, the verdict rule and the 2D accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from videogn.models.factory import create_model
from videogn.sweep.mini.flicker_task import ensure_flicker_task
from videogn.sweep.mini.pretrain2d import QUADRANT, TRAIN_COLUMNS, _region
from videogn.sweep.mini.report import load_annotations, report_mini, verdict
from videogn.sweep.mini.study import (
    figure7_section,
    make_jobs,
    pretrain_and_inflate,
    run_jobs,
    study_env,
)

TOY_PRETRAIN = {"iterations": 3, "batch_size": 8, "val_crops_per_class": 1}
TOY_RUN = [
    "optim.epochs=1",
    "trainer.max_iterations=2",
    "test.num_clips=1",
    "trainer.precise_bn.num_batches=1",
]


def test_train_and_validation_crops_come_from_disjoint_columns():
    labels = torch.arange(8)
    _, _, train_left, train_width = _region(labels, "train")
    _, _, val_left, val_width = _region(labels, "val")
    assert (train_left + train_width <= val_left).all()
    assert (val_left + val_width == train_left + QUADRANT).all()
    assert (train_width == TRAIN_COLUMNS).all()


def test_verdict_follows_the_preregistered_rule():
    assert verdict([5.0, 6.0, 7.0]).startswith("**gain**")
    assert verdict([-3.0, -2.5, -3.5]).startswith("**loss**")
    assert verdict([5.0, -4.0, 6.0]).startswith("no difference")  # spread too wide
    assert verdict([1.0, 1.1, 0.9]).startswith("no difference")  # under 2 points
    assert verdict([8.0]) == "n < 2: no verdict"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    return pretrain_and_inflate(tmp_path_factory.mktemp("cache"), TOY_PRETRAIN)


def test_inflated_checkpoints_fill_the_mini_i3d(stage):
    for norm, entry in stage.items():
        assert entry["record"]["num_classes"] == 68 and 0 <= entry["record"]["val_top1"] <= 100
        norm_kwargs = {"num_groups": 4} if norm == "gn" else None
        model = create_model(
            norm=norm, norm_kwargs=norm_kwargs, num_classes=8, base_width=8,
            stage_depths=(1, 1, 1, 1), pretrained=str(entry["inflated"]),
            pretrained_kwargs={"strict": True},
        )  # fmt: skip
        weights = torch.load(entry["inflated"])
        assert torch.equal(model.stem.conv.weight, weights["model"]["stem.conv.weight"])


def test_two_cells_train_test_resume_and_report(stage, tmp_path):
    task = ensure_flicker_task(
        tmp_path / "task", num_classes=8, train_videos_per_class=1, val_videos_per_class=1,
        frames_per_video=66,
    )  # fmt: skip
    experiments = ["mini_table8/bn_32x2_bs8", "mini_table8/gn_32x2_bs8"]
    jobs = make_jobs(experiments, [0], tmp_path / "runs")
    frames = tmp_path / "frames"
    overrides = [f"data.root={task.root}", f"data.frame_cache={frames}", *TOY_RUN]
    assert run_jobs(jobs, overrides, study_env(stage)) == 0
    assert all(job.done for job in jobs)
    logs = [job.run_dir.with_suffix(".log").stat().st_mtime_ns for job in jobs]
    assert run_jobs(jobs, overrides, study_env(stage)) == 0  # both skipped
    assert [job.run_dir.with_suffix(".log").stat().st_mtime_ns for job in jobs] == logs
    config = (jobs[1].run_dir / "config.yaml").read_text()
    assert str(stage["gn"]["inflated"]) in config and "seed: 0" in config
    text = report_mini(
        [job.run_dir for job in jobs],
        tmp_path / "mini.md",
        tmp_path / "mini.png",
        annotations=load_annotations(task.root),
        pretrain_records={norm: entry["record"] for norm, entry in stage.items()},
    )
    assert "(n=1)" in text and "n < 2: no verdict" in text and "68 |" in text
    assert "*missing*" in text  # the six cells this test did not run
    assert json.loads((jobs[0].run_dir / "results.json").read_text())["videos_evaluated"] == 8
    assert len(list(frames.glob("*.npy"))) == 16  # each video decoded once for both runs
    section = figure7_section(jobs, tmp_path / "curves.png")
    assert "Figure 7" in section and (tmp_path / "curves.png").stat().st_size > 0
