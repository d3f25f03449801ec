"""Model registry and ``create_model``: the public entry point for use without hydra."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from videogn.models.i3d import ResNet3D
from videogn.models.norm import NormLayer, get_norm_layer
from videogn.models.pretrained_sources import is_scratch, load_options

# name -> constructor(num_classes=..., norm_layer=..., **overrides)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "i3d_r50": partial(ResNet3D, depth=50),
    "i3d_r101": partial(ResNet3D, depth=101),
}


def create_model(
    name: str = "i3d_r50",
    *,
    norm: str | NormLayer = "bn",
    norm_kwargs: dict | None = None,
    num_classes: int = 400,
    pretrained: str | None = None,
    pretrained_kwargs: dict | None = None,
    **overrides,
) -> nn.Module:
    """Build a registered video model.

    Args:
        name: a key of ``MODELS`` ("i3d_r50", "i3d_r101").
        norm: a norm name of :data:`videogn.models.norm.NORM_BUILDERS` or a
            ``norm_layer(num_channels)`` callable.
        norm_kwargs: options of the norm (``num_groups=32``, ``channels_per_group``, ``eps``...).
        num_classes: classifier outputs.
        pretrained: path to an inflated videogn checkpoint, or to a 2D ImageNet ResNet
            (torchvision ``.pth`` or Detectron ``.pkl``), which is inflated on the fly, or a
            named source (``torchvision:resnet50``, ``detectron:R-50-GN``: downloaded once,
            :mod:`videogn.models.pretrained_sources`); None or "none": from scratch.
        pretrained_kwargs: options of :func:`videogn.models.inflate.load_pretrained`
            (``mode="center"``, ``norm_mismatch="affine_only"``, ``strict=True``...); a named
            source adds those its file needs (Detectron's BGR conv1 flipped for RGB input).
        overrides: constructor arguments of the model, e.g. ``base_width=16``,
            ``stage_depths=(1, 1, 1, 1)``, ``dropout=0.0``.

    Returns:
        the ``nn.Module``; its forward maps [N, 3, T, H, W] floats to logits [N, num_classes].
    """
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; valid names: {', '.join(MODELS)}")
    norm_layer = get_norm_layer(norm, **(norm_kwargs or {}))
    model = MODELS[name](num_classes=num_classes, norm_layer=norm_layer, **overrides)
    if not is_scratch(pretrained):
        from videogn.models.inflate import load_pretrained

        options = {**load_options(pretrained), **(pretrained_kwargs or {})}
        load_pretrained(model, pretrained, **options)
    return model
