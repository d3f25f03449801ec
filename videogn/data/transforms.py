"""Spatial transforms on whole clips: uint8 until the last step, float32 [C, T, H, W] out.

With `output_dtype="uint8"` they stop before normalization and return uint8 [C, T, H, W]
clips (a quarter of the bytes through DataLoader workers, pinned memory and host-to-device
copies); `normalize_on_device` then normalizes the batch where the model runs.

Train: short-side scale jitter S ~ U{256..320}, a random 224 crop of the scaled clip, a
    horizontal flip with p=0.5, normalization. The crop is taken first in source coordinates
    and only that region is resized (bilinear, antialiased), which equals scaling the whole
    clip and then cropping up to sub-pixel rounding of the region, at a fraction of the cost.
Test: short side to 256 (the long side keeps the aspect ratio), then 1 centre crop, or 3
    crops (start, centre, end of the long side; centred on the short side), of `crop_size`
    (224, or 256 for fully-convolutional testing), or "full": the whole resized frame as one
    view (256x341 at 4:3): float32 [S, C, T, H, W].
Normalization: y = (x / 255 - mean) / std per RGB channel, mean and std in 0-1 units; they
    must match the pretrained weights, so they are explicit arguments with named presets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# (mean, std) per RGB channel in 0-1 units.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # torchvision / ImageNet models (also MMAction2's 123.675/58.395 on 0-255 pixels).
    "torchvision": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Caffe2 video models (Non-local, SlowFast): 0-255 pixels minus 114.75, divided by 57.375.
    "caffe2": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    # Caffe2/Detectron MSRA ImageNet ResNets: 0-255 pixels minus the RGB pixel mean, std 1
    # (those weights expect BGR order: flip the first conv's input channels when loading).
    "caffe2_msra": ((122.7717 / 255, 115.9465 / 255, 102.9801 / 255), (1 / 255,) * 3),
    # No centring: x / 255.
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a named preset."""
    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {name!r}; choose one of {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


OUTPUT_DTYPES = ("float32", "uint8")


def _check_output_dtype(output_dtype: str) -> str:
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype!r}")
    return output_dtype


def normalize_on_device(
    clips: torch.Tensor,
    mean,
    std,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """uint8 clips [..., 3, T, H, W] -> (x / 255 - mean) / std as `dtype`, on clips' device.

    The arithmetic of the transforms' float output (x * scale + shift in float32, then cast),
    so on uint8 transform output it gives the float transform output exactly. Move the uint8
    batch to the device first (`.to(device, non_blocking=True)`): 4x fewer bytes than float.
    `memory_format` sets the result's layout (e.g. torch.channels_last_3d for a model in that
    format); None keeps the input's.
    """
    if clips.dtype != torch.uint8 or clips.ndim < 4 or clips.shape[-4] != 3:
        raise ValueError(
            f"expected uint8 clips [..., 3, T, H, W], got {clips.dtype} {tuple(clips.shape)}"
        )
    mean64 = torch.as_tensor(mean, dtype=torch.float64)
    std64 = torch.as_tensor(std, dtype=torch.float64)
    view = (3, 1, 1, 1)
    scale = (1.0 / (255.0 * std64)).to(clips.device, torch.float32).view(view)
    shift = (-mean64 / std64).to(clips.device, torch.float32).view(view)
    out = torch.addcmul(shift, clips, scale)
    if memory_format is not None:
        return out.to(dtype=dtype, memory_format=memory_format)
    return out.to(dtype)


def _as_tchw_uint8(frames) -> torch.Tensor:
    """[T, H, W, 3] uint8 (numpy or torch) -> [T, 3, H, W] view, channels-last in memory."""
    clip = (
        torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    )
    if clip.dtype != torch.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames [T, H, W, 3], got {tuple(clip.shape)} {clip.dtype}"
        )
    return clip.permute(0, 3, 1, 2)


def _resize(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    # The uint8 kernels run fastest on contiguous channels-last input (a crop view is not).
    clip = clip.contiguous(memory_format=torch.channels_last)
    return F.interpolate(clip, size=size, mode="bilinear", align_corners=False, antialias=True)


def _scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Frame size with the short side at `short_side`, as torchvision's Resize(int) computes it."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


class _Normalize:
    def __init__(self, mean, std):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        std = torch.as_tensor(std, dtype=torch.float64)
        if mean.shape != (3,) or std.shape != (3,) or not bool((std > 0).all()):
            raise ValueError(f"mean and std need 3 values, std > 0; got mean={mean}, std={std}")
        self.mean, self.std = tuple(mean.tolist()), tuple(std.tolist())
        # (x / 255 - mean) / std == x * scale + shift: one pass per channel, uint8 in, float out.
        self._scale = (1.0 / (255.0 * std)).tolist()
        self._shift = [torch.tensor(v, dtype=torch.float32) for v in (-mean / std).tolist()]

    def __call__(
        self,
        clip_tchw: torch.Tensor,
        out: torch.Tensor | None = None,
        output_dtype: str = "float32",
    ) -> torch.Tensor:
        """uint8 [..., T, 3, H, W] -> float32 [..., 3, T, H, W] (into `out` when given).

        With output_dtype="uint8" only the dimension order changes: uint8 [..., 3, T, H, W]
        (without `out`: a view of channels-last memory, T, H, W, C).
        """
        *lead, frames, _, height, width = clip_tchw.shape
        shape = (*lead, 3, frames, height, width)
        dtype = torch.uint8 if output_dtype == "uint8" else torch.float32
        if dtype == torch.uint8 and out is None:
            # Dense channels-last memory (a crop view would drag its whole frames along when
            # pickled); the dimension swap is a view, and the collate's copy sets the layout.
            dense = clip_tchw.contiguous(memory_format=torch.channels_last)
            return dense.transpose(-4, -3)
        if out is None:
            out = torch.empty(shape, dtype=dtype)
        elif tuple(out.shape) != shape or out.dtype != dtype:
            raise ValueError(f"out must be {dtype} {shape}, got {out.dtype} {tuple(out.shape)}")
        if dtype == torch.uint8:
            return out.copy_(clip_tchw.transpose(-4, -3))
        for c in range(3):
            torch.add(
                self._shift[c], clip_tchw.select(-3, c), alpha=self._scale[c], out=out.select(-4, c)
            )
        return out


class TrainTransform:
    """Scale jitter, random crop, random flip, normalization (module docstring has details)."""

    def __init__(
        self,
        scale_range: tuple[int, int] = (256, 320),
        crop_size: int = 224,
        flip_p: float = 0.5,
        mean=NORMALIZATIONS["torchvision"][0],
        std=NORMALIZATIONS["torchvision"][1],
        output_dtype: str = "float32",
    ):
        self.output_dtype = _check_output_dtype(output_dtype)
        low, high = (int(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(
                f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}"
            )
        if crop_size > low:
            raise ValueError(f"crop_size {crop_size} is larger than the smallest scale {low}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        self.scale_range, self.crop_size, self.flip_p = (low, high), int(crop_size), flip_p
        self.normalize = _Normalize(mean, std)

    def sample_params(self, height: int, width: int, rng: np.random.Generator) -> dict:
        """Random scale, crop box in source pixels, and flip for a clip of this frame size."""
        short_side = int(rng.integers(self.scale_range[0], self.scale_range[1] + 1))
        scaled_h, scaled_w = _scaled_size(height, width, short_side)
        crop = self.crop_size
        top = int(rng.integers(0, scaled_h - crop + 1))
        left = int(rng.integers(0, scaled_w - crop + 1))
        sy, sx = scaled_h / height, scaled_w / width
        box_h = min(max(round(crop / sy), 1), height)
        box_w = min(max(round(crop / sx), 1), width)
        box_top = min(round(top / sy), height - box_h)
        box_left = min(round(left / sx), width - box_w)
        flip = bool(rng.random() < self.flip_p)
        return {"short_side": short_side, "box": (box_top, box_left, box_h, box_w), "flip": flip}

    def __call__(self, frames, rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> float32 (or `output_dtype`) [3, T, crop, crop]."""
        clip = _as_tchw_uint8(frames)
        rng = np.random.default_rng() if rng is None else rng
        params = self.sample_params(clip.shape[-2], clip.shape[-1], rng)
        top, left, box_h, box_w = params["box"]
        region = clip[:, :, top : top + box_h, left : left + box_w]
        if params["flip"]:
            # Flip the region before resizing (the resize is mirror-symmetric): the flip is
            # then the one copy that makes the region contiguous, not an extra pass.
            region = region.permute(0, 2, 3, 1).flip(2).permute(0, 3, 1, 2)
        crop = _resize(region, (self.crop_size, self.crop_size))
        return self.normalize(crop, output_dtype=self.output_dtype)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(scale_range={self.scale_range}, crop_size={self.crop_size}, "
            f"flip_p={self.flip_p}, mean={self.normalize.mean}, std={self.normalize.std}, "
            f"output_dtype={self.output_dtype!r})"
        )


FULL_FRAME = "full"  # test.num_crops: one view per clip, the whole frame after the resize
NUM_CROPS = (1, 3, FULL_FRAME)


def parse_num_crops(value) -> int | str:
    """1, 3 or "full" (also given as the strings "1", "3"); anything else is an error."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value not in NUM_CROPS or isinstance(value, bool):
        raise ValueError(f"num_crops (test.num_crops) must be 1, 3 or 'full', got {value!r}")
    return value


def describe_views(num_crops) -> str:
    """Words for the views per clip: "1 crop", "3 crops" or "the full frame"."""
    num_crops = parse_num_crops(num_crops)
    if num_crops == FULL_FRAME:
        return "the full frame"
    return f"{num_crops} crop{'s' if num_crops > 1 else ''}"


class TestTransform:
    """Short-side resize, then 1 centre crop, 3 crops along the long side, or the full frame;
    normalization.

    ``num_crops="full"`` gives one view per clip: the whole frame at the short side (256x341
    for a 4:3 video at 256, 256x455 for 16:9), for fully convolutional testing as in the GN
    and Non-local papers; ``crop_size`` does not apply. Views of one video share a size.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        short_side: int = 256,
        crop_size: int = 224,
        num_crops: int | str = 1,
        mean=NORMALIZATIONS["torchvision"][0],
        std=NORMALIZATIONS["torchvision"][1],
        output_dtype: str = "float32",
    ):
        self.output_dtype = _check_output_dtype(output_dtype)
        num_crops = parse_num_crops(num_crops)
        if num_crops != FULL_FRAME and crop_size > short_side:
            raise ValueError(f"crop_size {crop_size} is larger than short_side {short_side}")
        self.short_side, self.crop_size, self.num_crops = int(short_side), int(crop_size), num_crops
        self.normalize = _Normalize(mean, std)

    @property
    def views_per_clip(self) -> int:
        return 1 if self.num_crops == FULL_FRAME else self.num_crops

    def view_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of every view of a video whose frames are height x width."""
        if self.num_crops == FULL_FRAME:
            return _scaled_size(height, width, self.short_side)
        return self.crop_size, self.crop_size

    def crop_boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop in a frame already resized to the short side."""
        if self.num_crops == FULL_FRAME:
            return [(0, 0)]
        crop = self.crop_size
        centre = ((height - crop) // 2, (width - crop) // 2)
        if self.num_crops == 1:
            return [centre]
        if height > width:  # portrait: crops run top to bottom
            return [(top, centre[1]) for top in (0, centre[0], height - crop)]
        return [(centre[0], left) for left in (0, centre[1], width - crop)]

    def __call__(self, frames, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> float32 (or `output_dtype`) [views, 3, T, h, w]: `views`
        crops of crop x crop, or one full frame of :meth:`view_size`.

        Writes into `out` when given (its dtype must match `output_dtype`).
        """
        clip = _as_tchw_uint8(frames)
        view_h, view_w = self.view_size(clip.shape[-2], clip.shape[-1])
        clip = _resize(clip, _scaled_size(clip.shape[-2], clip.shape[-1], self.short_side))
        boxes = self.crop_boxes(clip.shape[-2], clip.shape[-1])
        shape = (len(boxes), 3, clip.shape[0], view_h, view_w)
        dtype = torch.uint8 if self.output_dtype == "uint8" else torch.float32
        if out is None:
            out = self.empty_views(shape)
        elif tuple(out.shape) != shape or out.dtype != dtype:
            raise ValueError(f"out must be {dtype} {shape}, got {out.dtype} {tuple(out.shape)}")
        for view, (top, left) in zip(out, boxes, strict=True):
            region = clip[:, :, top : top + view_h, left : left + view_w]
            self.normalize(region, out=view, output_dtype=self.output_dtype)
        return out

    def empty_views(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Uninitialized output for views [N, 3, T, crop, crop] of this transform's dtype.

        uint8 views are laid out channels_last_3d (memory order N, T, H, W, C, that of the
        decoded frames), so cropping them is a plain copy and `normalize_on_device` can hand
        channels_last_3d input to a model that runs in that format.
        """
        if self.output_dtype == "uint8":
            return torch.empty(shape, dtype=torch.uint8, memory_format=torch.channels_last_3d)
        return torch.empty(shape, dtype=torch.float32)

    def __repr__(self) -> str:
        return (
            f"TestTransform(short_side={self.short_side}, crop_size={self.crop_size}, "
            f"num_crops={self.num_crops}, mean={self.normalize.mean}, std={self.normalize.std}, "
            f"output_dtype={self.output_dtype!r})"
        )
