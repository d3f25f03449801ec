"""Process-group setup (torchrun env:// or SLURM tasks) and the few collectives the engine uses.

Launch with ``torchrun --nproc_per_node=N -m videogn.cli.train ...`` or one SLURM task per
device (``srun``). Without either, the run is a single process and every helper here is a
no-op, so the engine has one code path.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _expand_first_host(nodelist: str) -> str:
    """First host of a SLURM nodelist ("gpu[03-05,07],cpu1" -> "gpu03") without scontrol."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        pass
    match = re.match(r"([^\[,]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST '{nodelist}'")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def env_from_slurm() -> None:
    """Translate SLURM task variables into torch's env:// ones, unless torchrun set them.

    One SLURM task per device: RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS, LOCAL_RANK =
    SLURM_LOCALID; the first node of the job hosts the rendezvous.
    """
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return  # one task (perhaps running torchrun itself): nothing to translate
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = _expand_first_host(os.environ["SLURM_JOB_NODELIST"])
    if "MASTER_PORT" not in os.environ:
        # Derived from the job id so concurrent jobs sharing a node do not collide.
        os.environ["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> this process's GPU if there is one, else CPU; anything else as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device='{name}' but CUDA is not available; use device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


# torchrun's elastic agent keeps one TCP store for every attempt of a job (torch >= 2.4 shares
# the rendezvous store with the workers). Its keys outlive the workers that wrote them.
_agent_store: dist.Store | None = None


def elastic_attempt() -> int:
    """Which attempt of a torchrun job this worker belongs to (0 first, then 1 per restart)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _connect_agent_store(timeout: timedelta) -> dist.Store | None:
    """A client of the elastic agent's store, or None when not launched by torchrun."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return None
    return dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timeout,
    )


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group if launched by torchrun/SLURM (gloo on CPU, nccl on GPU).

    Args:
        timeout_s: how long a collective waits for a missing peer before it fails, so a rank
            whose peer died (or hangs) ends instead of waiting forever.
    """
    global _agent_store
    env_from_slurm()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        kwargs = {"device_id": torch_device} if backend == "nccl" else {}
        timeout = timedelta(seconds=timeout_s)
        _agent_store = _connect_agent_store(timeout)
        if _agent_store is not None:
            # A restarted worker would otherwise find the previous attempt's gloo/NCCL
            # addresses in the agent's store (the keys are the same each attempt) and try to
            # connect to dead workers: "connectFullMesh failed", or a hang. One key space per
            # attempt gives every restart a fresh rendezvous.
            store = dist.PrefixStore(f"videogn/attempt_{elastic_attempt()}", _agent_store)
            kwargs.update(store=store, rank=rank, world_size=world_size)
        else:
            kwargs.update(init_method="env://")
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        logger.info("rank %d/%d joined the %s process group", rank, world_size, backend)
    return DistInfo(rank, world_size, local_rank, torch_device)


def first_attempt_value(key: str, value: str) -> str:
    """``value`` as the first attempt of this torchrun job recorded it under ``key`` (recording
    it if this is the first): e.g. the run directory, which a restarted worker must reuse
    although hydra names a new one. Outside torchrun, ``value`` itself."""
    if _agent_store is None:
        return value
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    recorded = _agent_store.compare_set(f"videogn/job_{run_id}/{key}", "", value)
    return recorded.decode() if isinstance(recorded, bytes) else recorded


def shutdown_distributed(synchronize: bool = False) -> None:
    """Leave the process group. ``synchronize`` (on a normal exit) first waits for every rank:
    a gloo rank that tears its group down while a peer still uses the connections can be
    aborted by std::terminate at exit (seen in the 2-process CPU test)."""
    global _agent_store
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
    _agent_store = None


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over processes (returns a new tensor)."""
    values = values.detach().clone()
    if world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= world_size()
    return values


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (returns a new tensor)."""
    values = values.detach().clone()
    if world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order (a one-element list without a process group)."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every process."""
    if world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def shard_indices(num_items: int, rank: int, world: int) -> list[int]:
    """This rank's share of ``range(num_items)``: strided, disjoint, nothing padded or repeated.

    Ranks may get one item more or less than each other; for testing that is what we want
    (each video counted exactly once), unlike ``DistributedSampler`` which pads with repeats.
    """
    return list(range(rank, num_items, world))
