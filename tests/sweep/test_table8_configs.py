"""The Table 8 experiment files and launch settings: each cell's norm, clip, per-GPU batch, lr
under linear scaling, pretrained source; the SLURM launcher; the multirun command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from videogn.config import CONFIG_DIR, register_configs
from videogn.engine.builders.optim import build_optim
from videogn.models.factory import create_model
from videogn.sweep.cells import TABLE8, TABLE8_EXTENDED
from videogn.sweep.mini.report import MINI_CELLS
from videogn.sweep.table8 import accumulation_steps, pretrained_env, table8_multirun

register_configs()


@pytest.fixture(scope="module")
def make_cfg():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *o, hydra=False: compose("train", list(o), return_hydra_config=hydra)


@pytest.mark.parametrize("cell", TABLE8, ids=lambda c: c.experiment)
def test_each_cell_holds_the_paper_setting(make_cfg, monkeypatch, cell):
    monkeypatch.setenv("VIDEOGN_PRETRAINED_BN", "/w/bn.pt")
    monkeypatch.setenv("VIDEOGN_PRETRAINED_GN", "/w/gn.pt")
    cfg = make_cfg(f"experiment={cell.experiment}", "data.root=/k400")
    assert cfg.norm.name.name == cell.norm and cfg.model.base_width == 64
    assert (cfg.sampler.num_frames, cfg.sampler.frame_interval) == (32, 2) or cell.clip == "64x1"
    assert f"{cfg.sampler.num_frames}x{cfg.sampler.frame_interval}" == cell.clip
    assert cfg.data.batch_size == cell.batch and cfg.test.num_clips == 10
    assert (cfg.test.num_crops, cfg.test.short_side) == ("full", 256)  # the paper's test
    assert cfg.model.pretrained == f"/w/{cell.norm}.pt"
    assert cfg.data.normalization == ("caffe2_msra" if cell.norm == "gn" else "torchvision")
    assert cfg.name == "table8_" + cell.experiment.split("/")[1]
    # 8 GPUs: lr 0.01 at 8 clips per GPU (64 in all), 0.005 at 4 (linear scaling)
    model = create_model("i3d_r50", norm="none", base_width=8, stage_depths=(1, 1, 1, 1))
    lr = build_optim(cfg.optim).optimizer(model, cell.batch * 8).param_groups[0]["lr"]
    assert lr == pytest.approx(0.01 * cell.batch / 8)
    # Figure 7's monitor after every 2 epochs in every cell, whatever its batch or list size
    assert cfg.trainer.val_period == 0 and cfg.trainer.val_period_epochs == 2
    assert cfg.trainer.val_videos is None
    # the Non-local test: fully convolutional head, its reader's clip positions
    assert (cfg.test.head.name, cfg.test.clip_positions.name) == ("fully_conv", "nonlocal")


@pytest.mark.parametrize("cell", MINI_CELLS, ids=lambda c: c.experiment)
def test_mini_cells_differ_only_in_norm_clip_and_batch(make_cfg, monkeypatch, cell):
    monkeypatch.setenv("VIDEOGN_MINI_PRETRAINED_BN", "/w/bn.pt")
    monkeypatch.setenv("VIDEOGN_MINI_PRETRAINED_GN", "/w/gn.pt")
    cfg = make_cfg(f"experiment={cell.experiment}", "data.root=/mini")
    reference = make_cfg("experiment=mini_table8/bn_32x2_bs8", "data.root=/mini")
    assert cfg.norm.name.name == cell.norm and cfg.data.batch_size == cell.batch
    assert f"{cfg.sampler.num_frames}x{cfg.sampler.frame_interval}" == cell.clip
    assert cfg.model.base_width == 8 and cfg.model.pretrained == f"/w/{cell.norm}.pt"
    assert cfg.model.require_pretrained  # no silent from-scratch run
    # the same epochs and one lr per 64 clips for every cell (linear scaling does the rest)
    assert cfg.optim == reference.optim
    assert cfg.data.frame_cache and cfg.data.crop_size == reference.data.crop_size == 40
    # validation at every epoch's end, whatever the batch
    assert cfg.trainer.val_period == 0 and cfg.trainer.val_period_epochs == 1
    assert cfg.trainer.val_videos == 64 and cfg.test.head.name == "fully_conv"


@pytest.mark.parametrize("cell", TABLE8_EXTENDED, ids=lambda c: c.experiment)
def test_cells_beyond_the_paper_checkpoint_automatically_at_the_papers_memory(make_cfg, cell):
    cfg = make_cfg(f"experiment={cell.experiment}", "data.root=/k400")
    assert cfg.norm.name.name == cell.norm and cfg.model.base_width == 64
    assert f"{cfg.sampler.num_frames}x{cfg.sampler.frame_interval}" == cell.clip
    assert cfg.data.batch_size == cell.batch and cell.paper_top1 is None
    assert cfg.trainer.activation_checkpointing == "auto" and cfg.data.memory_budget_gb == 6.5
    assert cfg.data.normalization == ("caffe2_msra" if cell.norm == "gn" else "torchvision")
    assert cfg.name == "table8_" + cell.experiment.split("/")[1]
    model = create_model("i3d_r50", norm="none", base_width=8, stage_depths=(1, 1, 1, 1))
    lr = build_optim(cfg.optim).optimizer(model, cell.batch * 8).param_groups[0]["lr"]
    assert lr == pytest.approx(0.01 * cell.batch / 8)


def test_extended_multirun_runs_the_six_cells_and_the_three_beyond(tmp_path):
    command = table8_multirun(tmp_path, ["data.root=/k"], extended=True).command()
    cells = TABLE8 + TABLE8_EXTENDED
    assert "experiment=" + ",".join(c.experiment for c in cells) in command
    assert len(cells) == 9


def test_slurm_launcher_gives_each_job_one_node_of_8_gpu_tasks(make_cfg):
    cfg = make_cfg("hydra/launcher=table8_slurm", "hydra.launcher.partition=gpu", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 8, 8)
    # requeueable: the run requeues itself at the time-limit warning (videogn/engine/requeue.py)
    assert launcher.additional_parameters.requeue is True and launcher.signal_delay_s == 300


def test_fewer_processes_accumulate_to_the_paper_batch(tmp_path):
    assert [accumulation_steps(n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="3 processes"):
        accumulation_steps(3)
    command = table8_multirun(tmp_path, ["data.root=/k"], nproc_per_node=2).command()
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and "trainer.accumulation_steps=4" in command
    assert "experiment=" + ",".join(c.experiment for c in TABLE8) in command
    assert "hydra.sweep.subdir=${name}" in command and f"hydra.sweep.dir={tmp_path}" in command


def test_slurm_multirun_uses_the_launcher_config(tmp_path):
    command = table8_multirun(tmp_path, [], slurm=True).command()
    assert "hydra/launcher=table8_slurm" in command and "torch.distributed.run" not in command
    assert not any(a.startswith("trainer.accumulation_steps") for a in command)


def test_pretrained_variables_are_optional_overrides_checked_before_any_job(monkeypatch, tmp_path):
    monkeypatch.delenv("VIDEOGN_PRETRAINED_BN", raising=False)
    monkeypatch.delenv("VIDEOGN_PRETRAINED_GN", raising=False)
    assert pretrained_env(False, []) == {}  # the experiment files' named sources apply
    (tmp_path / "bn.pt").write_bytes(b"")
    monkeypatch.setenv("VIDEOGN_PRETRAINED_BN", str(tmp_path / "bn.pt"))
    monkeypatch.setenv("VIDEOGN_PRETRAINED_GN", str(tmp_path / "gn.pt"))
    with pytest.raises(ValueError, match="gn.pt: no such file"):
        pretrained_env(False, [])
    monkeypatch.setenv("VIDEOGN_PRETRAINED_GN", "detectron:R-50-GX")
    with pytest.raises(ValueError, match="unknown pretrained source 'detectron:R-50-GX'"):
        pretrained_env(False, [])
    monkeypatch.setenv("VIDEOGN_PRETRAINED_GN", "")
    with pytest.raises(ValueError, match="VIDEOGN_PRETRAINED_GN is set but empty"):
        pretrained_env(False, [])
    monkeypatch.setenv("VIDEOGN_PRETRAINED_GN", "detectron:R-101-GN")
    assert pretrained_env(False, [])["VIDEOGN_PRETRAINED_GN"] == "detectron:R-101-GN"
    with pytest.raises(ValueError, match="same weights"):
        pretrained_env(True, ["model.pretrained=x.pt"])
    assert pretrained_env(True, []) == {
        "VIDEOGN_PRETRAINED_BN": None,
        "VIDEOGN_PRETRAINED_GN": None,
    }
    assert Path(CONFIG_DIR, "hydra/launcher/table8_slurm.yaml").is_file()


def test_from_scratch_gives_every_cell_an_explicit_none(tmp_path, capsys):
    from videogn.sweep.table8 import launch_table8

    launch_table8(tmp_path, ["data.root=/k"], from_scratch=True, dry_run=True)
    assert "model.pretrained=none" in capsys.readouterr().out.splitlines()[-1]
