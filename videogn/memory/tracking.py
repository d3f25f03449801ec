"""Memory accounting without memory: follow tensor storages on the meta device.

Two modes make a training step on meta tensors tell how much memory the real one needs:

- :class:`AllocationTracker` (a dispatch mode, below autograd) sees every storage the ops
  create, including those autograd saves for backward and the gradients it makes, and learns
  when each one is freed from a finalizer on the storage. Replaying its event log gives the
  live bytes at any moment and their peak.
- :class:`AutocastEmulation` (a function mode, above autograd) casts arguments the way
  ``torch.autocast`` would on a CUDA device. Real autocast has no meta backend; casting above
  autograd matters because autograd saves the *cast* tensors, which is where mixed precision
  saves (or, for fp32-listed ops such as group_norm, spends) memory. Layers that handle mixed
  precision themselves (videogn's GroupNorm) see the emulation as autocast
  (:mod:`videogn.models.autocast`), so the estimate follows their own code.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from videogn.models.autocast import emulated_autocast

# Functions that autocast runs in the low dtype / in fp32, by the name a function mode sees.
# From the policy lists of aten/src/ATen/autocast_mode.h (CUDA), restricted to what a video
# model can call; composite losses (cross_entropy) are listed by what their parts do.
CUDA_LOW_PRECISION_OPS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_tbc", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv", "linear",
    "addbmm", "baddbmm", "bmm", "chain_matmul", "scaled_dot_product_attention",
})  # fmt: skip
CUDA_FP32_OPS = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "group_norm",
    "cosine_similarity", "nll_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss",
    "mse_loss", "binary_cross_entropy_with_logits", "cdist", "logsumexp", "softmax",
    "log_softmax", "cross_entropy", "sum", "prod", "cumsum", "cumprod", "interpolate",
})  # fmt: skip
# CPU autocast differs (pooling in fp32, group_norm in the low dtype). This subset covers the
# I3D models, so that tests can check the emulation against real CPU autocast.
CPU_LOW_PRECISION_OPS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_tbc", "prelu", "addmm", "matmul", "mm", "linear", "addbmm", "baddbmm", "bmm",
    "scaled_dot_product_attention",
})  # fmt: skip
CPU_FP32_OPS = frozenset({
    "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d", "cross_entropy", "nll_loss", "mse_loss",
    "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "binary_cross_entropy_with_logits",
})  # fmt: skip
AUTOCAST_POLICIES = {
    "cuda": (CUDA_LOW_PRECISION_OPS, CUDA_FP32_OPS),
    "cpu": (CPU_LOW_PRECISION_OPS, CPU_FP32_OPS),
}
_AUTOCAST_SOURCE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of the storage under ``tensor`` (views and in-place results share it)."""
    return tensor.untyped_storage()._cdata


class AllocationTracker(TorchDispatchMode):
    """Log every storage created by dispatched ops, and its release, to replay live bytes.

    Args:
        untracked: tensors that exist before the mode (parameters, buffers); their storages,
            and views of them, are never counted.
    """

    def __init__(self, untracked: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._untracked = {storage_key(t) for t in untracked}
        self._alive: dict[int, int] = {}  # storage key -> allocation id
        self._finalizers: dict[int, weakref.finalize] = {}
        self._next_id = itertools.count()
        self.sizes: list[int] = []  # allocation id -> bytes
        self.events: list[int] = []  # +id+1 when allocated, -(id+1) when freed

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._record(leaf)
        return out

    def _record(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._untracked or key in self._alive:
            return
        alloc_id = next(self._next_id)
        self._alive[key] = alloc_id
        self.sizes.append(storage.nbytes())
        self.events.append(alloc_id + 1)
        # Storages keep their Python object alive as long as any tensor uses them, so this
        # fires exactly when the (meta) memory would be returned to the allocator.
        self._finalizers[alloc_id] = weakref.finalize(storage, self._release, key, alloc_id)

    def _release(self, key: int, alloc_id: int) -> None:
        self._alive.pop(key, None)
        self._finalizers.pop(alloc_id, None)
        self.events.append(-(alloc_id + 1))

    def mark(self) -> int:
        """A position in the event log, for :meth:`live_bytes` and :meth:`peak_bytes`."""
        return len(self.events)

    def allocation_ids(self, tensors: Iterable[torch.Tensor]) -> set[int]:
        """Allocation ids of the live storages under ``tensors`` (e.g. parameter gradients)."""
        keys = {storage_key(t) for t in tensors}
        return {alloc_id for key, alloc_id in self._alive.items() if key in keys}

    def _replay(self, end: int, exclude: set[int]) -> tuple[int, int]:
        live = peak = 0
        for event in self.events[:end]:
            alloc_id = abs(event) - 1
            if alloc_id in exclude:
                continue
            live += self.sizes[alloc_id] if event > 0 else -self.sizes[alloc_id]
            peak = max(peak, live)
        return live, peak

    def live_bytes(self, at: int | None = None, exclude: Iterable[int] = ()) -> int:
        """Bytes alive at event position ``at`` (default: now), leaving out ``exclude`` ids."""
        return self._replay(self.mark() if at is None else at, set(exclude))[0]

    def peak_bytes(self, exclude: Iterable[int] = ()) -> int:
        """Most bytes alive at once so far, leaving out the allocations ``exclude``."""
        return self._replay(self.mark(), set(exclude))[1]

    def close(self) -> None:
        """Stop listening for releases (storages still alive no longer call back)."""
        for finalizer in list(self._finalizers.values()):
            finalizer.detach()
        self._finalizers.clear()


class AutocastEmulation(TorchFunctionMode):
    """Cast function arguments as ``torch.autocast(policy, dtype)`` would, on any device.

    Low-precision ops get their floating inputs in ``dtype``; fp32 ops get them in float32;
    other ops run on what they receive (type promotion does the rest, as under autocast).
    Casts of leaf tensors that require grad (weights) are cached for the mode's lifetime,
    as autocast caches them for its region.

    Args:
        dtype: torch.float16 or torch.bfloat16.
        policy: "cuda" (what training uses) or "cpu" (to check against real CPU autocast).
    """

    def __init__(self, dtype: torch.dtype, policy: str = "cuda"):
        super().__init__()
        if policy not in AUTOCAST_POLICIES:
            raise ValueError(
                f"autocast policy '{policy}': expected one of {list(AUTOCAST_POLICIES)}"
            )
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast dtype {dtype}: expected torch.float16 or torch.bfloat16")
        self.dtype = dtype
        self.low_precision_ops, self.fp32_ops = AUTOCAST_POLICIES[policy]
        self._weight_casts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._suspend_depth = 0

    def _cast(self, value, dtype: torch.dtype):
        if not isinstance(value, torch.Tensor) or value.dtype not in _AUTOCAST_SOURCE_DTYPES:
            return value
        if value.dtype == dtype:
            return value
        if value.is_leaf and value.requires_grad and dtype == self.dtype:
            cached = self._weight_casts.get(id(value))
            if cached is None or cached[0] is not value:
                cached = (value, value.to(dtype))
                self._weight_casts[id(value)] = cached
            return cached[1]
        return value.to(dtype)

    def __enter__(self):
        # Layers that run their own mixed precision (the lean GroupNorm) see the emulation as
        # autocast, and switch it off for their inner ops as they would switch autocast off.
        self._declaration = emulated_autocast(self)
        self._declaration.__enter__()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        # Autocast drops its weight casts when its region ends; so do we.
        self._weight_casts.clear()
        result = super().__exit__(exc_type, exc_value, traceback)
        self._declaration.__exit__(exc_type, exc_value, traceback)
        return result

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Pass every function through unchanged inside the block."""
        self._suspend_depth += 1
        try:
            yield
        finally:
            self._suspend_depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._suspend_depth:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in self.low_precision_ops:
            dtype = self.dtype
        elif name in self.fp32_ops:
            dtype = torch.float32
        else:
            return func(*args, **kwargs)
        args, kwargs = tree_map(lambda v: self._cast(v, dtype), (args, kwargs))
        return func(*args, **kwargs)
