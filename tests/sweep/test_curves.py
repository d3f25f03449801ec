"""``videogn-sweep curves``: Figure 7 from two real training runs (BN and GN, validation
every 3 iterations), the x axis in epochs, seeds averaged at shared steps, and runs without
metrics left out with a clear error when nothing is left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from videogn.cli.sweep import main as sweep_main
from videogn.data.demo import ensure_demo_dataset
from videogn.sweep.curves import Curve, average_curves, group_settings, load_run_curves
from videogn.sweep.runs import read_run

DEMO = {
    "num_classes": 4,
    "train_videos_per_class": 4,
    "val_videos_per_class": 2,
    "frames_per_video": 24,
    "frame_size": 32,
    "event_gap": 8,
    "event_length": 2,
}


def train(run_dir: Path, cache: Path, *overrides: str) -> Path:
    """A real videogn-train run: 16 videos, batch 4, 2 epochs = 8 iterations, no test."""
    params = [f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"]
    command = [
        sys.executable, "-m", "videogn.cli.train", f"hydra.run.dir={run_dir}",
        f"data.demo.cache_dir={cache}", *params, "data.num_classes=4", "data.batch_size=4",
        "data.num_workers=0", "data.scale_range=[32,36]", "data.crop_size=32", "sampler=8x2",
        "optim.epochs=2", "trainer.num_threads=1", "trainer.progress_bar=false",
        "trainer.precise_bn.num_batches=2", "trainer.log_period=1", "trainer.val_period=3",
        "trainer.test_at_end=false", *overrides,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("curves")
    ensure_demo_dataset(root / "cache", **DEMO)
    return [
        train(root / "bn", root / "cache", "norm=bn"),
        train(root / "gn", root / "cache", "norm=gn", "norm.num_groups=4"),
    ]


@pytest.mark.slow
def test_figure7_png_from_two_real_runs(two_runs, tmp_path, capsys):
    out = tmp_path / "figure7.png"
    assert sweep_main(["curves", *map(str, two_runs), "--out", str(out)]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape[1] == round(2 * 5.2 * 120)  # one panel per norm, BN and GN
    printed = capsys.readouterr().out
    assert "| BN | 8x2 | 4 | 1 | 8 |" in printed and "| GN | 8x2 | 4 | 1 | 8 |" in printed
    assert "(3) |" in printed  # val points at iterations 3, 6 and 8 (the end)


@pytest.mark.slow
def test_curves_hold_the_logged_errors_on_an_epoch_axis(two_runs):
    curves = load_run_curves(read_run(two_runs[0]))
    assert curves.val.steps == [3, 6, 8] and curves.iterations_per_epoch == 4
    assert curves.train.steps == list(range(1, 9))  # log_period 1
    assert all(0 <= e <= 100 for e in curves.train.errors + curves.val.errors)
    (setting,) = group_settings([curves])
    assert setting.x(curves.val.steps, "epochs") == [0.75, 1.5, 2.0]


def test_seeds_average_at_the_steps_they_share():
    seed0 = Curve([10, 20, 30], [50.0, 40.0, 30.0])
    seed1 = Curve([10, 20, 25, 30], [60.0, 44.0, 1.0, 20.0])  # 25: a step seed 0 lacks
    mean = average_curves([seed0, seed1])
    assert mean.steps == [10, 20, 30] and mean.errors == [55.0, 42.0, 25.0]


def test_a_directory_without_runs_is_named(tmp_path, capsys):
    assert sweep_main(["curves", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
