"""The model group (``model`` + ``norm``) -> a :class:`ModelSpec`, and the model it creates."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from videogn.config import enum_value
from videogn.engine.distributed import DistInfo
from videogn.models.factory import create_model
from videogn.models.pretrained_sources import is_scratch, resolve_pretrained

# Options each norm accepts (see videogn.models.norm.NORM_BUILDERS); unset ones keep the
# norm's own defaults (GN: 32 groups).
NORM_OPTIONS = {
    "bn": ("eps", "momentum"),
    "sync_bn": ("eps", "momentum"),
    "frozen_bn": ("eps",),
    "gn": ("num_groups", "channels_per_group", "eps"),
    "ln": ("eps",),
    "in": ("eps",),
    "none": (),
}


class PretrainedRequiredError(ValueError):
    """``model.require_pretrained`` is set and ``model.pretrained`` resolved to null."""


@dataclass(frozen=True)
class ModelSpec:
    """``create_model`` arguments and the weights to start from."""

    kwargs: dict  # name, norm, norm_kwargs, num_classes, widths, depths, ...
    pretrained: str | None = None  # a path, a named source, or None (scratch)

    @property
    def norm(self) -> str:
        return self.kwargs["norm"]

    def fetch_pretrained(self) -> None:
        """Download a named source now (once per machine), so that an unreachable address
        fails in seconds, before any data is read."""
        if self.pretrained:
            resolve_pretrained(self.pretrained)

    def create(self, *, pretrained: bool = True) -> nn.Module:
        """The model, from ``pretrained`` weights when asked (a restore loads its own)."""
        return create_model(**self.kwargs, pretrained=self.pretrained if pretrained else None)


def norm_kwargs(norm_cfg: DictConfig) -> dict:
    """The options of the chosen norm that are set (others are ignored)."""
    name = enum_value(norm_cfg.name)
    return {k: norm_cfg[k] for k in NORM_OPTIONS[name] if norm_cfg[k] is not None}


def build_model_spec(model_cfg: DictConfig, norm_cfg: DictConfig) -> ModelSpec:
    """The ``model`` and ``norm`` groups as ``create_model`` arguments."""
    m = model_cfg
    kwargs = {
        "name": enum_value(m.name),
        "norm": enum_value(norm_cfg.name),
        "norm_kwargs": norm_kwargs(norm_cfg),
        "num_classes": m.num_classes,
        "base_width": m.base_width,
        "stem_temporal_kernel": m.stem_temporal_kernel,
        "dropout": m.dropout,
        "zero_init_last_norm": m.zero_init_last_norm,
    }
    if m.stage_depths is not None:
        kwargs["stage_depths"] = tuple(m.stage_depths)
    if m.temporal_kernels is not None:
        kwargs["temporal_kernels"] = [tuple(k) for k in m.temporal_kernels]
    check_pretrained_given(m)
    return ModelSpec(kwargs, None if is_scratch(m.pretrained) else m.pretrained)


def pretrained_origin(model_cfg: DictConfig) -> str:
    """What sets ``model.pretrained``: the variable of an ``${oc.env:VAR,...}`` value, else
    the key itself."""
    if OmegaConf.is_interpolation(model_cfg, "pretrained"):
        raw = OmegaConf.to_container(model_cfg, resolve=False)["pretrained"]
        match = re.search(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)", str(raw))
        if match:
            return f"the environment variable {match.group(1)}"
    return "model.pretrained"


def check_pretrained_given(model_cfg: DictConfig) -> None:
    """No silent from-scratch run: with ``model.require_pretrained``, a null
    ``model.pretrained`` stops the run before it starts, naming what to set.

    Raises:
        PretrainedRequiredError: naming the environment variable or the key.
    """
    if not model_cfg.require_pretrained or model_cfg.pretrained not in (None, ""):
        return
    origin = pretrained_origin(model_cfg)
    raise PretrainedRequiredError(
        f"this experiment starts from ImageNet weights (model.require_pretrained=true), but "
        f"model.pretrained is null: set {origin} to a 2D or inflated checkpoint or a named "
        "source (torchvision:resnet50, detectron:R-50-GN), or pass model.pretrained=none to "
        "train from scratch on purpose"
    )


def place_model(model: nn.Module, dist: DistInfo, *, channels_last_3d: bool) -> nn.Module:
    """Move the model to its device (and memory format); check its norm suits the launch."""
    has_sync_bn = any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    if has_sync_bn and dist.distributed and dist.device.type != "cuda":
        raise ValueError(
            "norm=sync_bn needs GPUs (nn.SyncBatchNorm has no CPU kernel); "
            "use norm=bn for per-process statistics on CPU"
        )
    model = model.to(dist.device)
    if channels_last_3d:
        model = model.to(memory_format=torch.channels_last_3d)
    return model
