"""Launch plumbing that needs no process group: test sharding and SLURM variables."""

from __future__ import annotations

import os

import pytest

from videogn.engine.distributed import _expand_first_host, env_from_slurm, shard_indices


@pytest.mark.parametrize(("num_items", "world"), [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_test_shards_count_every_video_exactly_once(num_items, world):
    shards = [shard_indices(num_items, rank, world) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(num_items))


@pytest.fixture
def environ(monkeypatch):
    """A private copy of os.environ: what env_from_slurm writes must not leak into later tests
    (a leaked WORLD_SIZE would make every later training run wait for a process group)."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    return os.environ


def test_slurm_tasks_become_torch_env(environ, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[03-04]")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    env_from_slurm()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "5",
        "8",
        "1",
    )
    assert os.environ["MASTER_ADDR"] == "gpu03"
    assert os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000)


def test_torchrun_env_wins_over_slurm(environ, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    env_from_slurm()
    assert os.environ["RANK"] == "0"


@pytest.mark.parametrize(
    ("nodelist", "host"), [("node7", "node7"), ("gpu[03-05,07]", "gpu03"), ("a[1,2],b3", "a1")]
)
def test_first_host_of_a_nodelist(nodelist, host):
    assert _expand_first_host(nodelist) == host
