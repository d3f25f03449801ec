"""Which autocast dtype applies to a layer that handles mixed precision itself.

A layer such as the lean GroupNorm (:mod:`videogn.models.group_norm`) asks
:func:`active_autocast_dtype` whether it runs under autocast, and runs its own ops inside
:func:`autocast_suspended` so that autocast does not recast them. Besides real
``torch.autocast``, the memory estimator's emulation of CUDA autocast on meta tensors
(:class:`videogn.memory.tracking.AutocastEmulation`) registers itself here with
:func:`emulated_autocast`, so that the estimate runs the very code path training runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Protocol

import torch


class Emulation(Protocol):
    """What an autocast emulation offers the layers that run under it."""

    dtype: torch.dtype

    def suspended(self) -> AbstractContextManager:
        """Its off switch."""

    def __enter__(self): ...

    def __exit__(self, *exc): ...


_EMULATED: ContextVar[Emulation | None] = ContextVar("videogn_emulated_autocast", default=None)


def active_autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The low-precision dtype autocast gives ops on ``tensor``'s device, or None when off."""
    emulated = _EMULATED.get()
    if emulated is not None:
        return emulated.dtype
    device_type = tensor.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


@contextmanager
def autocast_suspended(tensor: torch.Tensor) -> Iterator[None]:
    """Run the block without autocast (real or emulated) for ``tensor``'s device."""
    emulated = _EMULATED.get()
    if emulated is not None:
        with emulated.suspended():
            yield
    else:
        with torch.autocast(tensor.device.type, enabled=False):
            yield


def emulation_for_recompute() -> AbstractContextManager:
    """A context that puts the emulation in force now back in force later, for activation
    checkpointing's recomputation in backward (``torch.utils.checkpoint`` restores real
    autocast itself, but knows nothing of the emulation)."""
    emulated = _EMULATED.get()
    return emulated if emulated is not None else nullcontext()


@contextmanager
def emulated_autocast(emulation: Emulation) -> Iterator[None]:
    """Declare ``emulation`` in force. Used by the memory estimator, never by training."""
    token = _EMULATED.set(emulation)
    try:
        yield
    finally:
        _EMULATED.reset(token)
