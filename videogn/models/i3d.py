"""ResNet I3D of the Non-local Networks baseline ("resnet_video_org", output stride T/8).

Layout (Wang et al. 2018, as used by the GN paper's Table 8):

    stem   conv 5x7x7/2,2,2 -> norm -> relu -> max pool 2x3x3/2,2,2     T/4,  H/4
    res2   bottlenecks, then max pool 2x1x1/2,1,1 ("pool2")            T/8,  H/4
    res3   first block: spatial stride 2 in conv b                    T/8,  H/8
    res4                                                              T/8,  H/16
    res5                                                              T/8,  H/32
    head   global average pool over (T,H,W) -> dropout -> linear

Each bottleneck is conv a (1x1x1 or 3x1x1) -> conv b (1x3x3, carries the spatial stride)
-> conv c (1x1x1), each followed by a norm; the projection shortcut is 1x1x1 with the block's
stride. Which conv a is 3x1x1 comes from ``TEMPORAL_KERNELS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import nn

from videogn.models.checkpointing import run_checkpointed
from videogn.models.conv import Conv3d
from videogn.models.norm import NormLayer, get_norm_layer

# Temporal kernel of conv "a" for every block of res2..res5, per depth (3 = 3x1x1, 1 = 1x1x1).
# From the Non-local code's use_temp_convs_{2,3,4,5} for the "org" I3D baselines.
TEMPORAL_KERNELS: dict[int, tuple[tuple[int, ...], ...]] = {
    50: ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1)),
    # res4 of 23 blocks: 3 on every even block index, the last (22) included
    101: ((3, 3, 3), (3, 1, 3, 1), (3, 1) * 11 + (3,), (1, 3, 1)),
}
STAGE_DEPTHS: dict[int, tuple[int, ...]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BOTTLENECK_EXPANSION = 4
# Segments that activation checkpointing can take, in network order.
CHECKPOINT_STAGES = ("stem", "res2", "res3", "res4", "res5")


class Stem(nn.Module):
    """conv1 (5x7x7, stride 2 in T, H, W) -> norm -> ReLU -> pool1 (2x3x3, stride 2)."""

    def __init__(
        self, in_channels: int, out_channels: int, norm_layer: NormLayer, temporal_kernel: int = 5
    ):
        super().__init__()
        self.conv = Conv3d(
            in_channels,
            out_channels,
            (temporal_kernel, 7, 7),
            stride=(2, 2, 2),
            padding=(temporal_kernel // 2, 3, 3),
            bias=False,
        )
        self.norm = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        # Spatial padding 1 keeps torchvision's 224 -> 112 -> 56; temporally 2/2 halves T.
        self.pool = nn.MaxPool3d((2, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.norm(self.conv(x))))


class Bottleneck(nn.Module):
    """conv a (t x1x1) -> conv b (1x3x3, spatial stride) -> conv c (1x1x1), plus a shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        temporal_kernel: int,
        spatial_stride: int,
        norm_layer: NormLayer,
    ):
        super().__init__()
        self.conv_a = Conv3d(
            in_channels,
            bottleneck_channels,
            (temporal_kernel, 1, 1),
            padding=(temporal_kernel // 2, 0, 0),
            bias=False,
        )
        self.norm_a = norm_layer(bottleneck_channels)
        self.conv_b = Conv3d(
            bottleneck_channels,
            bottleneck_channels,
            (1, 3, 3),
            stride=(1, spatial_stride, spatial_stride),
            padding=(0, 1, 1),
            bias=False,
        )
        self.norm_b = norm_layer(bottleneck_channels)
        self.conv_c = Conv3d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm_c = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.proj_conv = self.proj_norm = None
        if in_channels != out_channels or spatial_stride != 1:
            self.proj_conv = Conv3d(
                in_channels, out_channels, 1, stride=(1, spatial_stride, spatial_stride), bias=False
            )
            self.proj_norm = norm_layer(out_channels)

    def zero_init_last(self) -> None:
        """Zero the last norm's gamma, so the residual branch starts at 0 and the block as the
        identity (Goyal et al. 2017); a norm without affine weights is left as it is."""
        if getattr(self.norm_c, "weight", None) is not None:
            nn.init.zeros_(self.norm_c.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj_conv is None else self.proj_norm(self.proj_conv(x))
        y = self.relu(self.norm_a(self.conv_a(x)))
        y = self.relu(self.norm_b(self.conv_b(y)))
        y = self.norm_c(self.conv_c(y))
        return self.relu(y + shortcut)


class ResStage(nn.Sequential):
    """A stage of bottlenecks; the first one changes width and spatial stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        temporal_kernels: Sequence[int],
        spatial_stride: int,
        norm_layer: NormLayer,
    ):
        blocks = []
        for i, temporal_kernel in enumerate(temporal_kernels):
            blocks.append(
                Bottleneck(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    bottleneck_channels=bottleneck_channels,
                    temporal_kernel=temporal_kernel,
                    spatial_stride=spatial_stride if i == 0 else 1,
                    norm_layer=norm_layer,
                )
            )
        super().__init__(*blocks)


class Head(nn.Module):
    """Global average pool over any (T, H, W) -> dropout -> linear, so testing can be fully
    convolutional on longer clips or larger frames than training used."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))

    def window_logits(self, x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
        """The Non-local test head: logits at every position of a (T, H, W) ``window`` average
        pool at stride 1, the fc acting as a 1x1x1 convolution; [N, C, t, h, w] features ->
        [N, classes, t', h', w']. A window larger than the map is cut to the map's size."""
        kernel = [min(w, size) for w, size in zip(window, x.shape[2:], strict=True)]
        pooled = nn.functional.avg_pool3d(x, kernel, stride=1)
        return self.fc(pooled.movedim(1, -1)).movedim(-1, 1)  # eval mode: no dropout


def res5_size(num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(T, H, W) of the res5 map for an input clip: conv1 and pool1 halve time (ceil, then
    floor), pool2 halves it again (floor); conv1, pool1, res3, res4, res5 each halve space
    (ceil, with their padding). T/8 x H/32 x W/32 when the sizes divide (32x224x224: 4x7x7)."""
    frames = (num_frames + 1) // 2 // 2 // 2
    height, width = (-(-side // 32) for side in (height, width))
    return frames, height, width


def stage_temporal_kernels(depth: int, stage_depths: Sequence[int]) -> list[list[int]]:
    """Temporal kernels of conv a per block; a stage deeper than the table cycles its pattern."""
    table = TEMPORAL_KERNELS[depth if depth in TEMPORAL_KERNELS else 50]
    return [
        [pattern[i % len(pattern)] for i in range(n)]
        for pattern, n in zip(table, stage_depths, strict=True)
    ]


class ResNet3D(nn.Module):
    """I3D ResNet: stem -> res2 -> pool2 -> res3 -> res4 -> res5 -> head.

    Args:
        num_classes: classifier outputs.
        norm_layer: ``norm_layer(num_channels)`` callable, see :mod:`videogn.models.norm`.
        depth: 50 or 101; chooses the default stage depths and temporal-kernel table.
        stage_depths: blocks in res2..res5 (default from ``depth``).
        temporal_kernels: per-stage lists of conv-a temporal kernels (default from ``depth``).
        base_width: stem channels and res2 bottleneck width (64 in the paper); each later stage
            doubles it and outputs ``4 *`` its width. Reduce it for toy runs.
        dropout: head dropout.
        zero_init_last_norm: start the last norm of each block with gamma = 0, so every residual
            block starts as the identity.
        stem_temporal_kernel: temporal kernel of conv1 (5 in the paper).
        activation_checkpointing: stages of ``CHECKPOINT_STAGES`` whose activations are
            recomputed in backward instead of kept, see :meth:`set_activation_checkpointing`.
    """

    # Named parts that weight adaptation reads (timm's pretrained_cfg): the conv that sees the
    # pixels (BGR <-> RGB flips act on it) and the classifier (replaced when a checkpoint's
    # classes differ). videogn.models.inflate and checkpoint_sources take the names from here.
    pretrained_cfg = MappingProxyType({"first_conv": "stem.conv", "classifier": "head.fc"})

    def __init__(
        self,
        num_classes: int = 400,
        norm_layer: NormLayer | None = None,
        *,
        depth: int = 50,
        stage_depths: Sequence[int] | None = None,
        temporal_kernels: Sequence[Sequence[int]] | None = None,
        base_width: int = 64,
        in_channels: int = 3,
        dropout: float = 0.5,
        zero_init_last_norm: bool = True,
        stem_temporal_kernel: int = 5,
        activation_checkpointing: Sequence[str] = (),
    ):
        super().__init__()
        norm_layer = norm_layer or get_norm_layer("bn")
        stage_depths = tuple(stage_depths or STAGE_DEPTHS[depth])
        if temporal_kernels is None:
            temporal_kernels = stage_temporal_kernels(depth, stage_depths)
        if [len(k) for k in temporal_kernels] != list(stage_depths):
            raise ValueError(
                f"temporal_kernels {temporal_kernels} do not match stage_depths {stage_depths}"
            )
        self.stem = Stem(in_channels, base_width, norm_layer, stem_temporal_kernel)
        channels = base_width
        for i, kernels in enumerate(temporal_kernels):
            width = base_width * 2**i
            stage = ResStage(
                channels,
                width * BOTTLENECK_EXPANSION,
                bottleneck_channels=width,
                temporal_kernels=kernels,
                spatial_stride=1 if i == 0 else 2,
                norm_layer=norm_layer,
            )
            self.add_module(f"res{i + 2}", stage)
            if i == 0:
                self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
            channels = width * BOTTLENECK_EXPANSION
        self.head = Head(channels, num_classes, dropout)
        self.num_features = channels
        self._init_weights(zero_init_last_norm)
        self.set_activation_checkpointing(activation_checkpointing)

    def set_activation_checkpointing(self, stages: Sequence[str] | str = ()) -> None:
        """Recompute the activations of ``stages`` in backward instead of keeping them.

        Args:
            stages: names from ``CHECKPOINT_STAGES`` ("stem", "res2" ... "res5"), "all", or
                "none"/empty. A res stage is checkpointed block by block (each bottleneck keeps
                only its input), so backward recomputes one block at a time. Exact: same
                outputs and gradients, dropout's RNG restored, BN running statistics updated
                once per step (:mod:`videogn.models.checkpointing`).
        """
        if isinstance(stages, str):
            stages = {"all": CHECKPOINT_STAGES, "none": ()}.get(stages, (stages,))
        unknown = [s for s in stages if s not in CHECKPOINT_STAGES]
        if unknown:
            raise ValueError(
                f"activation checkpointing: unknown stage(s) {unknown}; expected names from "
                f"{list(CHECKPOINT_STAGES)}, 'all' or 'none'"
            )
        self.checkpointed_stages = tuple(s for s in CHECKPOINT_STAGES if s in stages)

    def _init_weights(self, zero_init_last_norm: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif getattr(m, "weight", None) is not None and m.weight.dim() == 1:
                # Norm layers (BN, GN, frozen BN): identity affine.
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.fc.weight, std=0.01)
        nn.init.zeros_(self.head.fc.bias)
        if zero_init_last_norm:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] -> res5 features [N, C, T/8, H/32, W/32]."""
        # Without autograd nothing is kept for backward: checkpointing would only cost time.
        checkpointing = torch.is_grad_enabled()
        for name, child in self.named_children():
            if name == "head":
                continue
            if not (checkpointing and name in self.checkpointed_stages):
                x = child(x)
            elif isinstance(child, ResStage):
                for block in child:
                    x = run_checkpointed(block, x)
            else:
                x = run_checkpointed(child, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
