"""A torchrun restart, by hand: the elastic agent's TCP store outlives the workers, as it does
under ``torchrun --max-restarts``, and a second attempt of two real gloo processes must build
its process group from its own addresses, not from those the dead first attempt left there."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from videogn.engine import distributed


def attempt_worker(rank: int, attempt: int, port: int, delay_s: float, queue) -> None:
    """One worker of one attempt, with the environment torchrun gives it."""
    os.environ.update(
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
        TORCHELASTIC_RESTART_COUNT=str(attempt),
        TORCHELASTIC_RUN_ID="restart-test",
    )
    # Rank 0 says when it starts joining; a delayed rank waits for that, then for delay_s, so
    # the order of the two does not depend on how fast each process started.
    marker = dist.TCPStore("127.0.0.1", port, is_master=False)
    if rank == 0:
        marker.set(f"test/attempt_{attempt}/rank0_joining", "1")
    elif delay_s:
        marker.wait([f"test/attempt_{attempt}/rank0_joining"])
        time.sleep(delay_s)
    try:
        distributed.init_distributed("cpu", timeout_s=30)
        total = distributed.all_reduce_sum(torch.tensor([rank + 1.0])).item()
        run_dir = distributed.first_attempt_value("run_dir", f"dir_of_attempt_{attempt}")
        queue.put((rank, (total, run_dir)))
        distributed.shutdown_distributed(synchronize=True)
    except Exception as err:  # reported to the test, which names it
        queue.put((rank, repr(err)))


def run_attempt(attempt: int, port: int, delays: tuple[float, float]) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=attempt_worker, args=(rank, attempt, port, delays[rank], queue))
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        return dict(queue.get(timeout=90) for _ in workers)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()


@pytest.mark.slow
def test_a_restarted_attempt_joins_a_fresh_process_group_and_keeps_the_run_dir():
    agent_store = dist.TCPStore("127.0.0.1", 0, is_master=True)  # the agent's, kept throughout
    first = run_attempt(0, agent_store.port, delays=(0.0, 0.0))
    assert first == {0: (3.0, "dir_of_attempt_0"), 1: (3.0, "dir_of_attempt_0")}
    # Whether a stale address breaks the mesh depends on which side of a pair connects (gloo
    # decides by comparing the two addresses), so a restart failed about every other time.
    # The dead attempt's keys are made unusable here, so a restart that reads them fails.
    gloo_keys = [key for key in agent_store.list_keys() if "/cpu/" in key]
    assert gloo_keys
    for key in gloo_keys:
        agent_store.set(key, b"not an address")
    # Rank 1 of the restart comes late, so rank 0 looks up rank 1's address before it is
    # written: without a key space per attempt it finds the dead attempt's and fails
    # ("Gloo connectFullMesh failed", or a hang until the queue's timeout).
    second = run_attempt(1, agent_store.port, delays=(0.0, 4.0))
    assert second == {0: (3.0, "dir_of_attempt_0"), 1: (3.0, "dir_of_attempt_0")}, second
