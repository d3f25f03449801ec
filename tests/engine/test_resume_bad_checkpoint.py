"""Auto-resume on a run whose checkpoints went bad, with real runs of ``videogn-train``: the
newest checkpoint of a short run is truncated (what a full disk or a killed copy leaves), or
the run is restarted with another model config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogn.data.demo import ensure_demo_dataset
from videogn.engine.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

DEMO = {
    "num_classes": 4,
    "train_videos_per_class": 4,
    "val_videos_per_class": 1,
    "frames_per_video": 24,
    "frame_size": 32,
    "event_gap": 8,
    "event_length": 2,
}


def train(demo_cache: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """A 4-iteration run (16 videos, batches of 4) with a checkpoint every 2 iterations."""
    overrides = [
        f"hydra.run.dir={run_dir}",
        f"data.demo.cache_dir={demo_cache}",
        *(f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"),
        f"data.num_classes={DEMO['num_classes']}",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.scale_range=[32,36]",
        "data.crop_size=32",
        "sampler=8x2",
        "optim.epochs=1",
        "trainer.num_threads=1",
        "trainer.progress_bar=false",
        "trainer.precise_bn.num_batches=1",
        "trainer.checkpoint_period=2",
        "trainer.test_at_end=false",
        "trainer.val_period=0",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "videogn.cli.train", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    demo_cache = tmp_path_factory.mktemp("demo_cache")
    ensure_demo_dataset(demo_cache, **DEMO)
    run_dir = tmp_path_factory.mktemp("runs") / "finished"
    result = train(demo_cache, run_dir)
    assert result.returncode == 0, result.stdout[-4000:]
    assert [p.name for p in list_checkpoints(run_dir)] == ["iter_00000002.pt", "iter_00000004.pt"]
    return demo_cache, run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def truncate(path: Path, keep_fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def test_a_truncated_newest_checkpoint_is_skipped_and_the_previous_one_resumed(
    finished_run, tmp_path
):
    demo_cache, finished = finished_run
    run_dir = copy_of(finished, tmp_path)
    newest = run_dir / "checkpoints" / "iter_00000004.pt"
    truncate(newest, 0.5)
    result = train(demo_cache, run_dir)
    assert result.returncode == 0, result.stdout[-4000:]
    log = result.stdout
    assert f"skipping checkpoint {newest}: not a complete torch.save file" in log
    assert "truncated?" in log
    assert "falling back to" in log and "resumed from" in log
    assert f"resumed from {run_dir / 'checkpoints' / 'iter_00000002.pt'}" in log
    # Iterations 3 and 4 were trained again and the torn file replaced by a whole one.
    assert load_checkpoint(newest)["position"]["global_iteration"] == 4


def test_no_valid_checkpoint_fails_listing_each_file_and_why(finished_run, tmp_path):
    demo_cache, finished = finished_run
    run_dir = copy_of(finished, tmp_path)
    folder = run_dir / "checkpoints"
    truncate(folder / "iter_00000004.pt", 0.0)
    weights_only = {"model": load_checkpoint(folder / "iter_00000002.pt")["model"]}
    torch.save(weights_only, folder / "iter_00000002.pt")  # loads, but cannot resume a run
    result = train(demo_cache, run_dir)
    assert result.returncode != 0
    log = result.stdout
    assert f"no valid checkpoint in {folder}:" in log
    assert f"{folder / 'iter_00000004.pt'}: not a complete torch.save file (0 bytes" in log
    assert (
        f"{folder / 'iter_00000002.pt'} is not a videogn training checkpoint (no 'optimizer', "
        "'scheduler', 'scaler', 'rng', 'position', 'config' entries)"
    ) in log
    assert "trainer.resume=never" in log
    assert "PytorchStreamReader" not in log  # the zip reader's traceback never shows


def test_a_checkpoint_of_another_model_config_names_the_differing_entries(finished_run, tmp_path):
    demo_cache, finished = finished_run
    run_dir = copy_of(finished, tmp_path)
    result = train(demo_cache, run_dir, "model.base_width=4")
    assert result.returncode != 0
    log = result.stdout
    error = next(line for line in log.splitlines() if "different model config" in line)
    assert "iter_00000004.pt was written by a different model config" in error
    assert "stem.conv.weight: checkpoint (8, 3, 5, 7, 7) vs model (4, 3, 5, 7, 7)" in error
    assert "; ...)" in error and len(error) < 1500  # five named, the rest counted
    assert "Error(s) in loading state_dict" not in log
