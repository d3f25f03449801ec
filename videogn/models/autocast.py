"""Which autocast dtype applies to a layer that handles mixed precision itself.

A layer such as the lean GroupNorm (:mod:`videogn.models.group_norm`) asks
:func:`active_autocast_dtype` whether it runs under autocast, and runs its own ops inside
:func:`autocast_suspended` so that autocast does not recast them. Besides real
``torch.autocast``, the memory estimator's emulation of CUDA autocast on meta tensors
(:class:`videogn.memory.tracking.AutocastEmulation`) registers itself here with
:func:`emulated_autocast`, so that the estimate runs the very code path training runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

import torch

# (dtype, suspend) of the autocast emulation in force, if any; suspend() is a context manager.
_EMULATED: ContextVar[tuple[torch.dtype, Callable[[], AbstractContextManager]] | None] = ContextVar(
    "videogn_emulated_autocast", default=None
)


def active_autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The low-precision dtype autocast gives ops on ``tensor``'s device, or None when off."""
    emulated = _EMULATED.get()
    if emulated is not None:
        return emulated[0]
    device_type = tensor.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


@contextmanager
def autocast_suspended(tensor: torch.Tensor) -> Iterator[None]:
    """Run the block without autocast (real or emulated) for ``tensor``'s device."""
    emulated = _EMULATED.get()
    if emulated is not None:
        with emulated[1]():
            yield
    else:
        with torch.autocast(tensor.device.type, enabled=False):
            yield


@contextmanager
def emulated_autocast(
    dtype: torch.dtype, suspend: Callable[[], AbstractContextManager]
) -> Iterator[None]:
    """Declare an autocast emulation in force: ``dtype`` its low dtype, ``suspend()`` its off
    switch. Used by the memory estimator, never by training."""
    token = _EMULATED.set((dtype, suspend))
    try:
        yield
    finally:
        _EMULATED.reset(token)
