"""Checkpoint files: atomic writes, the latest of a run, pruning, RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from videogn.engine.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
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


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
