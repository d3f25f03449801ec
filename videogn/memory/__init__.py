"""Memory-aware batch sizing: estimate a step's memory, plan the batch, probe it on CUDA.

- :func:`estimate_memory`: bytes per clip and fixed bytes of a training step, computed on
  meta tensors (nothing allocated, about a second for I3D-R50 at 64x224 on a CPU).
- :func:`plan_batch`: the per-device batch x accumulation x world size for a budget and a
  target total batch, with what it means for BN (the statistics batch) and GN (none).
- :func:`probe_batch`: real steps on a CUDA device, backing off on out-of-memory.
"""

from videogn.memory.estimate import MemoryEstimate, estimate_memory
from videogn.memory.plan import BatchPlan, plan_batch
from videogn.memory.probe import ProbeResult, probe_batch

__all__ = [
    "BatchPlan",
    "MemoryEstimate",
    "ProbeResult",
    "estimate_memory",
    "plan_batch",
    "probe_batch",
]
