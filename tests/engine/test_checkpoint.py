"""Checkpoint files: atomic writes, the latest of a run, pruning, RNG round trips, and the
checks that keep a torn or foreign file from being trusted."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from videogn.engine.checkpoint import (
    RESUME_ENTRIES,
    CheckpointError,
    capture_rng_state,
    check_model_state,
    find_resume_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_designated_checkpoint,
    newest_valid_checkpoint,
    read_checkpoint_file,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from videogn.models import create_model
from videogn.utils.io import atomic_save


def test_atomic_save_replaces_without_leftovers(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, path)
    atomic_save({"model": {"w": torch.zeros(2)}}, path)
    assert torch.equal(torch.load(path)["model"]["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": {"step": 1}}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_save({"model": {"fn": lambda: 0}}, path)
    assert torch.load(path)["model"] == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_latest_is_by_iteration_and_old_ones_are_pruned(tmp_path):
    for iteration in (5, 100, 20):
        save_checkpoint({"model": {}, "it": iteration}, tmp_path, iteration, keep=2)
    assert latest_checkpoint(tmp_path).name == "iter_00000100.pt"
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["iter_00000020.pt", "iter_00000100.pt"]
    assert load_checkpoint(tmp_path)["it"] == 100  # a run directory means its latest


def test_resolve_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        resolve_checkpoint(tmp_path / "missing.pt")


def test_load_rejects_files_that_are_not_training_checkpoints(tmp_path):
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a videogn training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip(tmp_path):
    """Through a file read by the weights-only loader, as resume reads it."""
    np.random.randn()  # a cached Gaussian (has_gauss=1) is part of NumPy's state
    save_checkpoint({"model": {}, "rng": [capture_rng_state()]}, tmp_path, 1, keep=1)
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item())
    state = read_checkpoint_file(tmp_path / "checkpoints" / "iter_00000001.pt")
    restore_rng_state(state["rng"][0])
    assert (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item()) == first


def toy_model(base_width: int = 4):
    return create_model("i3d_r50", base_width=base_width, stage_depths=(1, 1, 1, 1), num_classes=3)


def training_state(model) -> dict:
    """What Trainer.state_dict holds, from a real model and optimizer."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 32, 32)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {},
        "scaler": {},
        "rng": [capture_rng_state()],
        "position": {"epoch": 0, "iteration_in_epoch": 0, "global_iteration": 0},
        "config": {"model": {"base_width": 4}},
    }


def cut(path, keep_fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def test_torn_and_foreign_files_are_refused_with_the_reason(tmp_path):
    path = save_checkpoint(training_state(toy_model()), tmp_path, 1, keep=0)
    assert set(read_checkpoint_file(path, RESUME_ENTRIES)) == set(RESUME_ENTRIES)
    cut(path, 0.7)
    with pytest.raises(CheckpointError, match=r"iter_00000001\.pt: not a complete torch\.save"):
        read_checkpoint_file(path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint_file(tmp_path / "gone.pt")
    torch.save({"model": {}, "optimizer": {}}, path)
    with pytest.raises(CheckpointError, match="no 'scheduler', 'scaler', 'rng', 'position', 'c"):
        read_checkpoint_file(path, RESUME_ENTRIES)
    read_checkpoint_file(path)  # enough to read weights from (videogn-test, pretrained)


def test_resume_falls_back_to_the_newest_valid_checkpoint(tmp_path, caplog):
    state = training_state(toy_model())
    for iteration in (2, 4, 6):
        state["position"]["global_iteration"] = iteration
        save_checkpoint(state, tmp_path, iteration, keep=0)
    folder = tmp_path / "checkpoints"
    cut(folder / "iter_00000006.pt", 0.5)
    cut(folder / "iter_00000004.pt", 0.99)
    caplog.set_level(logging.WARNING)
    path, loaded = find_resume_checkpoint("auto", tmp_path)
    assert path.name == "iter_00000002.pt" and loaded["position"]["global_iteration"] == 2
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert [m.split(": ")[0] for m in skipped] == [
        f"skipping checkpoint {folder / 'iter_00000006.pt'}",
        f"skipping checkpoint {folder / 'iter_00000004.pt'}",
    ]
    assert load_checkpoint(tmp_path)["position"]["global_iteration"] == 2
    assert load_designated_checkpoint(tmp_path, ("model", "config"))[0] == path  # videogn-test
    assert find_resume_checkpoint(str(tmp_path), tmp_path / "elsewhere")[0] == path
    assert find_resume_checkpoint("never", tmp_path) is None


def test_pruning_after_a_fallback_never_deletes_the_new_checkpoint(tmp_path):
    """Resumed from iteration 4 past a torn iteration 6, the run saves at 5 with keep=1: the
    torn file must not count as the newest one kept, or the valid one just written goes."""
    state = training_state(toy_model())
    for iteration in (4, 6):
        save_checkpoint(state, tmp_path, iteration, keep=0)
    cut(tmp_path / "checkpoints" / "iter_00000006.pt", 0.5)
    assert find_resume_checkpoint("auto", tmp_path)[0].name == "iter_00000004.pt"
    written = save_checkpoint(state, tmp_path, 5, keep=1)
    assert written.is_file() and not (tmp_path / "checkpoints" / "iter_00000004.pt").exists()
    assert find_resume_checkpoint("auto", tmp_path)[0] == written  # a later preemption resumes


def test_resume_with_no_valid_checkpoint_lists_every_file(tmp_path):
    assert find_resume_checkpoint("auto", tmp_path) is None  # a new run: nothing to resume
    path = save_checkpoint(training_state(toy_model()), tmp_path, 3, keep=0)
    (tmp_path / "checkpoints" / "iter_00000009.pt").write_bytes(b"")
    cut(path, 0.5)
    with pytest.raises(CheckpointError) as caught:
        newest_valid_checkpoint(tmp_path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"no valid checkpoint in {tmp_path / 'checkpoints'}:"
    assert lines[1].startswith(f"  {tmp_path / 'checkpoints' / 'iter_00000009.pt'}: not a comp")
    assert lines[2].startswith(f"  {path}: not a complete torch.save file")
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        find_resume_checkpoint("auto", tmp_path)


def test_a_checkpoint_of_another_model_names_the_differing_entries():
    narrow, wide = toy_model(4), toy_model(8)
    check_model_state(narrow, toy_model(4).state_dict(), "same.pt")  # same config: silent
    with pytest.raises(CheckpointError) as caught:
        check_model_state(wide, narrow.state_dict(), "run/iter_00000004.pt")
    message = str(caught.value)
    assert message.startswith("run/iter_00000004.pt was written by a different model config: ")
    assert "stem.conv.weight: checkpoint (4, 3, 5, 7, 7) vs model (8, 3, 5, 7, 7)" in message
    assert message.count(" vs model ") == 5 and "; ...)" in message
    extra = {**wide.state_dict(), "res6.0.conv_a.weight": torch.zeros(1)}
    del extra["head.fc.bias"]
    with pytest.raises(CheckpointError, match=r"1 entry missing from the checkpoint \(head\.fc"):
        check_model_state(wide, extra, "x.pt")
    with pytest.raises(CheckpointError, match=r"1 entry not in the model \(res6\.0\.conv_a"):
        check_model_state(wide, extra, "x.pt")
