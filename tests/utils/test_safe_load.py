"""Loading a file never runs its code: three crafted files whose unpickling would create a
marker file (a videogn checkpoint, a torchvision-style ``.pth``, a Detectron-style ``.pkl``)
are refused by every entry point that reads them, with a message naming the opt-in, and the
marker never appears; with the opt-in the same file does run its code (so the files are
real attacks), and real checkpoints of the old format load only with it."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videogn.cli.inflate import main as inflate_main
from videogn.cli.predict import main as predict_main
from videogn.data.demo import ensure_demo_dataset
from videogn.engine.checkpoint import (
    UnsafeCheckpointError,
    capture_rng_state,
    checkpoint_path,
    read_checkpoint_file,
    restore_rng_state,
)
from videogn.models import create_model
from videogn.utils.safe_load import (
    UNSAFE_LOAD_ENV,
    UnsafeFileError,
    load_detectron_pickle,
    load_torch_file,
)

TOY = dict(base_width=8, stage_depths=(1, 1, 1, 1), num_classes=5)
TOY_ARGS = ["--base-width", "8", "--stage-depths", "1,1,1,1", "--num-classes", "5"]


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the marker exists iff the code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A videogn training checkpoint whose RNG entry runs code."""
    model = create_model("i3d_r50", **TOY).state_dict()
    state = {"model": model, "config": {}, "position": {}, "rng": [CreatesMarker(marker)]}
    torch.save(state, path)
    return path


def crafted_pth(path: Path, marker: Path) -> Path:
    """A torchvision-layout state dict with one entry that runs code."""
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "x": CreatesMarker(marker)}, path)
    return path


def crafted_pkl(path: Path, marker: Path) -> Path:
    """A Detectron-layout blob pickle (protocol 2) with one entry that runs code."""
    blobs = {"conv1_w": np.zeros((8, 3, 7, 7), np.float32), "x": CreatesMarker(marker)}
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    return path


CRAFTED = {"checkpoint.pt": crafted_checkpoint, "r50.pth": crafted_pth, "R-50-GN.pkl": crafted_pkl}


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv(UNSAFE_LOAD_ENV, raising=False)


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_inflate_refuses_each_crafted_file_and_its_code_never_runs(name, tmp_path, capsys):
    marker, dst = tmp_path / "marker", tmp_path / "i3d.pt"
    src = CRAFTED[name](tmp_path / name, marker)
    assert inflate_main([str(src), str(dst), *TOY_ARGS]) == 1
    error = capsys.readouterr().err
    assert f"videogn-inflate: error: {src}: refused to load" in error
    assert f"set {UNSAFE_LOAD_ENV}=1" in error
    assert not marker.exists() and not dst.exists()


@pytest.mark.parametrize("name", ["r50.pth", "R-50-GN.pkl"])
def test_model_pretrained_refuses_crafted_2d_weights(name, tmp_path):
    marker = tmp_path / "marker"
    src = CRAFTED[name](tmp_path / name, marker)
    with pytest.raises(UnsafeFileError, match=UNSAFE_LOAD_ENV):
        create_model("i3d_r50", pretrained=str(src), **TOY)
    assert not marker.exists()


def test_predict_refuses_a_crafted_checkpoint(tmp_path, capsys):
    marker = tmp_path / "marker"
    checkpoint = crafted_checkpoint(tmp_path / "iter.pt", marker)
    assert predict_main([str(tmp_path / "video.mp4"), f"checkpoint={checkpoint}"]) == 1
    error = capsys.readouterr().err
    assert f"videogn-predict: error: {checkpoint}: refused to load" in error
    assert f"{UNSAFE_LOAD_ENV}=1" in error and not marker.exists()


@pytest.mark.slow  # a fresh interpreter running hydra
def test_videogn_test_refuses_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "marker"
    checkpoint = crafted_checkpoint(tmp_path / "iter.pt", marker)
    command = [sys.executable, "-m", "videogn.cli.test", f"checkpoint={checkpoint}",
               f"hydra.run.dir={tmp_path / 'out'}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{checkpoint}: refused to load" in result.stderr + result.stdout
    assert f"{UNSAFE_LOAD_ENV}=1" in result.stderr + result.stdout
    assert not marker.exists()


DEMO = dict(num_classes=4, train_videos_per_class=2, val_videos_per_class=1,
            frames_per_video=24, frame_size=32, event_gap=8, event_length=2)  # fmt: skip


@pytest.mark.slow  # a real videogn-train run
def test_resume_refuses_a_crafted_newest_checkpoint_instead_of_falling_back(tmp_path):
    marker, run_dir, cache = tmp_path / "marker", tmp_path / "run", tmp_path / "demo"
    ensure_demo_dataset(cache, **DEMO)
    checkpoint_path(run_dir, 4).parent.mkdir(parents=True)
    crafted = crafted_checkpoint(checkpoint_path(run_dir, 4), marker)
    params = [f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"]
    overrides = [
        f"hydra.run.dir={run_dir}", f"data.demo.cache_dir={cache}", *params,
        "data.num_classes=4", "data.batch_size=4", "data.num_workers=0", "sampler=8x2",
        "data.scale_range=[32,36]", "data.crop_size=32", "optim.epochs=1",
        "trainer.num_threads=1", "trainer.progress_bar=false", "trainer.test_at_end=false",
    ]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "videogn.cli.train", *overrides],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{crafted}: refused to load" in log and f"{UNSAFE_LOAD_ENV}=1" in log
    assert "resumed from" not in log and "falling back" not in log
    assert not marker.exists() and crafted.exists()  # nothing ran, nothing deleted


def test_the_crafted_files_do_run_code_with_the_opt_in(tmp_path, monkeypatch):
    """The control: without the refusal, loading these files runs their code."""
    monkeypatch.setenv(UNSAFE_LOAD_ENV, "1")
    for name, craft in CRAFTED.items():
        marker = tmp_path / f"marker_{name}"
        path = craft(tmp_path / name, marker)
        (load_detectron_pickle if name.endswith(".pkl") else load_torch_file)(path)
        assert marker.exists(), name


def old_format_checkpoint(path: Path) -> tuple[Path, np.ndarray]:
    """A checkpoint as videogn wrote it before the safe format (NumPy's RNG state as numpy's
    own tuple, an ndarray inside, which only full unpickling rebuilds), and the NumPy draws
    that follow its RNG state."""
    rng = {**capture_rng_state(), "numpy": np.random.get_state()}
    torch.save({"model": {"w": torch.ones(2)}, "config": {}, "rng": [rng]}, path)
    return path, np.random.rand(3)


def test_old_checkpoints_load_only_with_the_opt_in(tmp_path, monkeypatch):
    path, following_draws = old_format_checkpoint(tmp_path / "iter_00000002.pt")
    with pytest.raises(UnsafeCheckpointError, match=rf"numpy.*set {UNSAFE_LOAD_ENV}=1"):
        read_checkpoint_file(path)
    monkeypatch.setenv(UNSAFE_LOAD_ENV, "1")
    state = read_checkpoint_file(path)
    restore_rng_state(state["rng"][0])  # the old tuple form still restores
    assert np.array_equal(np.random.rand(3), following_draws)


def test_detectron_arrays_load_under_numpy_1_and_2_module_names_and_nothing_else(tmp_path):
    blobs = {"conv1_w": np.arange(6, dtype=np.float32).reshape(2, 3), "lr": np.float32(0.1),
             "names": ["a", "b"], "iter": 7}  # fmt: skip
    data = pickle.dumps({"blobs": blobs}, protocol=2)
    for module in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        path = tmp_path / "blobs.pkl"
        path.write_bytes(data.replace(b"numpy._core.multiarray", module))
        loaded = load_detectron_pickle(path)["blobs"]
        assert np.array_equal(loaded["conv1_w"], blobs["conv1_w"]) and loaded["lr"] == blobs["lr"]
        assert loaded["names"] == ["a", "b"] and loaded["iter"] == 7
    path.write_bytes(pickle.dumps({"blobs": {"x": np.float32}}, protocol=2))  # a class: refused
    with pytest.raises(UnsafeFileError, match=r"numpy\.float32"):
        load_detectron_pickle(path)
