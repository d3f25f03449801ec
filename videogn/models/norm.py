"""Normalization layers for 5D video tensors [N, C, T, H, W].

Every layer here computes its statistics over (T, H, W) as well as its usual axes:
BN over (N, T, H, W) per channel, GN over (C/G, T, H, W) per sample. The model never sees
a config: it receives a ``norm_layer(num_channels) -> nn.Module`` callable from
:func:`get_norm_layer`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from videogn.models.group_norm import ChannelsLastGroupNorm

NormLayer = Callable[[int], nn.Module]
# The GN paper's number of groups, the default wherever GN is built (conf/norm/gn.yaml too).
GN_DEFAULT_GROUPS = 32


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm with fixed statistics and affine: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    It has the same state-dict keys as ``nn.BatchNorm3d`` (weight, bias, running_mean,
    running_var), so BN checkpoints load into it, but nothing in it is trainable and its
    output never depends on the other samples of the batch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm checkpoints carry a step counter that a frozen layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _group_norm(
    num_channels: int,
    *,
    num_groups: int | None = GN_DEFAULT_GROUPS,
    channels_per_group: int | None = None,
    eps: float = 1e-5,
) -> nn.GroupNorm:
    # ChannelsLastGroupNorm is an nn.GroupNorm (same parameters and state-dict keys) whose
    # channels-last CPU path is faster and numerically stable; NCDHW runs torch's kernel.
    if channels_per_group is not None:
        if num_channels % channels_per_group:
            raise ValueError(
                f"gn: channels_per_group={channels_per_group} does not divide "
                f"{num_channels} channels"
            )
        groups = num_channels // channels_per_group
    else:
        groups = min(num_groups, num_channels)
    if num_channels % groups:
        raise ValueError(f"gn: num_groups={groups} does not divide {num_channels} channels")
    return ChannelsLastGroupNorm(groups, num_channels, eps=eps)


def _identity(num_channels: int) -> nn.Module:
    return nn.Identity()


def _build_bn(**kw) -> NormLayer:
    return partial(nn.BatchNorm3d, **kw)


def _build_sync_bn(**kw) -> NormLayer:
    return partial(nn.SyncBatchNorm, **kw)


def _build_frozen_bn(**kw) -> NormLayer:
    return partial(FrozenBatchNorm3d, **kw)


def _build_gn(**kw) -> NormLayer:
    if kw.get("channels_per_group") is not None:
        kw["num_groups"] = None
    return partial(_group_norm, **kw)


def _build_ln(eps: float = 1e-5) -> NormLayer:
    # G = 1: one group holds every channel, so statistics are over (C, T, H, W).
    return partial(_group_norm, num_groups=1, eps=eps)


def _build_in(eps: float = 1e-5) -> NormLayer:
    # G = C: one channel per group, statistics over (T, H, W) alone, as InstanceNorm3d.
    return partial(_group_norm, num_groups=None, channels_per_group=1, eps=eps)


def _build_none() -> NormLayer:
    return _identity


# name -> builder(**kwargs) -> norm_layer(num_channels)
NORM_BUILDERS: dict[str, Callable[..., NormLayer]] = {
    "bn": _build_bn,
    "sync_bn": _build_sync_bn,
    "frozen_bn": _build_frozen_bn,
    "gn": _build_gn,
    "ln": _build_ln,
    "in": _build_in,
    "none": _build_none,
}

# Layers whose statistics come from the batch and so change under a different batch size.
BATCH_NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def get_norm_layer(norm: str | NormLayer, **kwargs) -> NormLayer:
    """Turn a norm name (or an existing callable) into ``norm_layer(num_channels)``.

    Args:
        norm: one of ``NORM_BUILDERS`` ("bn", "sync_bn", "frozen_bn", "gn", "ln", "in", "none"),
            or a callable taking the channel count, returned unchanged.
        kwargs: options of that norm, e.g. ``num_groups`` / ``channels_per_group`` for gn,
            ``eps`` and ``momentum`` for bn.
    """
    if callable(norm):
        if kwargs:
            return partial(norm, **kwargs)
        return norm
    if norm not in NORM_BUILDERS:
        raise ValueError(f"unknown norm '{norm}'; valid names: {', '.join(NORM_BUILDERS)}")
    try:
        return NORM_BUILDERS[norm](**kwargs)
    except TypeError as e:
        raise TypeError(f"norm '{norm}' got invalid options {sorted(kwargs)}: {e}") from e


def norm_kind(module: nn.Module) -> str:
    """Name the kind of a norm module ("bn", "frozen_bn", "gn", "none") for reports and checks."""
    if isinstance(module, BATCH_NORM_TYPES):
        return "bn"
    if isinstance(module, FrozenBatchNorm3d):
        return "frozen_bn"
    if isinstance(module, nn.GroupNorm):
        return "gn"
    return "none"


def has_batch_norm(model: nn.Module) -> bool:
    """True when some layer of ``model`` normalizes with batch statistics."""
    return any(isinstance(m, BATCH_NORM_TYPES) for m in model.modules())
