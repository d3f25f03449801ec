"""Transforms: shapes, normalization, crop geometry, flip, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videogn.data.transforms import (
    NORMALIZATIONS,
    TestTransform,
    TrainTransform,
    normalization,
    normalize_on_device,
)

MEAN, STD = NORMALIZATIONS["torchvision"]


def constant_clip(value, frames=4, height=256, width=340) -> np.ndarray:
    clip = np.empty((frames, height, width, 3), np.uint8)
    clip[:] = value
    return clip


def column_clip(frames=2, height=256, width=340) -> np.ndarray:
    """Red channel = column index (mod 256), green = row index: shows where a crop came from."""
    clip = np.zeros((frames, height, width, 3), np.uint8)
    clip[..., 0] = np.arange(width) % 256
    clip[..., 1] = (np.arange(height) % 256)[:, None]
    return clip


def unnormalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """float [3, T, H, W] back to 0-255 pixel units."""
    return (x * torch.tensor(std).view(3, 1, 1, 1) + torch.tensor(mean).view(3, 1, 1, 1)) * 255


def test_train_output_shape_dtype_and_normalization():
    transform = TrainTransform(mean=MEAN, std=STD)
    out = transform(constant_clip((10, 128, 250)), np.random.default_rng(0))
    assert out.shape == (3, 4, 224, 224) and out.dtype == torch.float32 and out.is_contiguous()
    for c, value in enumerate((10, 128, 250)):
        expected = (value / 255 - MEAN[c]) / STD[c]
        assert torch.allclose(out[c], torch.full_like(out[c], expected), atol=1e-5)


def test_train_is_deterministic_given_the_rng_and_varies_otherwise():
    clip = column_clip()
    transform = TrainTransform()
    a = transform(clip, np.random.default_rng(5))
    b = transform(clip, np.random.default_rng(5))
    c = transform(clip, np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_mirrors_the_same_crop():
    clip = column_clip()
    kept = TrainTransform(flip_p=0.0)(clip, np.random.default_rng(3))
    flipped = TrainTransform(flip_p=1.0)(clip, np.random.default_rng(3))
    assert torch.equal(flipped, kept.flip(-1))


def test_scale_jitter_covers_the_range_and_the_box_stays_inside():
    transform = TrainTransform(scale_range=(256, 320), crop_size=224)
    rng = np.random.default_rng(0)
    sides = set()
    for _ in range(2000):
        params = transform.sample_params(256, 340, rng)
        top, left, box_h, box_w = params["box"]
        sides.add(params["short_side"])
        assert top >= 0 and top + box_h <= 256 and left >= 0 and left + box_w <= 340
        # The region is what a 224 crop covers at that scale.
        assert abs(box_h - 224 * 256 / params["short_side"]) <= 1
    assert sides == set(range(256, 321))


def test_crop_then_resize_matches_resize_then_crop_on_smooth_content():
    yy, xx = np.mgrid[0:256, 0:340]
    smooth = np.stack([xx * 0.6, yy * 0.8, (xx + yy) * 0.3], -1).astype(np.uint8)[None].repeat(2, 0)
    transform = TrainTransform(flip_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    rng_params, rng_call = np.random.default_rng(9), np.random.default_rng(9)
    params = transform.sample_params(256, 340, rng_params)
    ours = transform(smooth, rng_call) * 255
    # Reference: scale the whole clip, then crop at the same place in scaled coordinates.
    side = params["short_side"]
    scaled_w = int(side * 340 / 256)
    full = torch.from_numpy(smooth).permute(0, 3, 1, 2).float()
    full = F.interpolate(full, size=(side, scaled_w), mode="bilinear", align_corners=False)
    top = round(params["box"][0] * side / 256)
    left = round(params["box"][1] * scaled_w / 340)
    reference = full[:, :, top : top + 224, left : left + 224].permute(1, 0, 2, 3)
    assert (ours - reference).abs().mean() < 2.0


def test_test_transform_three_crops_along_the_long_side():
    out = TestTransform(short_side=256, crop_size=224, num_crops=3, mean=(0, 0, 0), std=(1, 1, 1))(
        column_clip(width=340)
    )
    assert out.shape == (3, 3, 2, 224, 224)
    left_columns = [round(float(view[0, 0, 0, 0]) * 255) for view in out]
    assert left_columns == [0, 58, 116]  # start, centre, end of the 340-wide frame
    assert all(round(float(view[1, 0, 0, 0]) * 255) == 16 for view in out)  # centred rows


def test_test_transform_portrait_crops_run_top_to_bottom():
    out = TestTransform(crop_size=256, num_crops=3, mean=(0, 0, 0), std=(1, 1, 1))(
        column_clip(height=340, width=256)
    )
    top_rows = [round(float(view[1, 0, 0, 0]) * 255) for view in out]
    assert top_rows == [0, 42, 84]


def test_test_transform_resizes_the_short_side_then_centre_crops():
    clip = constant_clip(200, frames=3, height=720, width=1280)
    out = TestTransform(short_side=256, crop_size=224, num_crops=1, mean=MEAN, std=STD)(clip)
    assert out.shape == (1, 3, 3, 224, 224)
    assert torch.allclose(unnormalize(out[0]), torch.full((3, 3, 224, 224), 200.0), atol=1e-3)


def test_fully_convolutional_256_crops():
    out = TestTransform(short_side=256, crop_size=256, num_crops=3)(
        constant_clip(0, height=240, width=426)
    )
    assert out.shape == (3, 3, 4, 256, 256)


@pytest.mark.parametrize(
    ("height", "width", "view"),
    [
        (240, 320, (256, 341)),
        (360, 640, (256, 455)),
        (400, 300, (341, 256)),
        (256, 256, (256, 256)),
    ],
    ids=["4:3", "16:9", "portrait", "square"],
)
def test_full_frame_view_is_the_whole_resized_frame(height, width, view):
    """test.num_crops=full: one view per clip, the frame at short side 256 with its aspect
    ratio (256x341 at 4:3, as the paper tests); the 3 crops of 256 are slices of it."""
    clip = column_clip(height=height, width=width)
    unit = dict(short_side=256, mean=(0, 0, 0), std=(1, 1, 1))
    full = TestTransform(num_crops="full", crop_size=224, **unit)(clip)
    assert full.shape == (1, 3, 2, *view)
    assert TestTransform(num_crops="full", **unit).view_size(height, width) == view
    crops = TestTransform(num_crops=3, crop_size=256, **unit)(clip)
    boxes = TestTransform(num_crops=3, crop_size=256, **unit).crop_boxes(*view)
    for crop, (top, left) in zip(crops, boxes, strict=True):
        assert torch.equal(crop, full[0, :, :, top : top + 256, left : left + 256])


def test_num_crops_accepts_1_3_and_full_only():
    assert [TestTransform(num_crops=n).views_per_clip for n in (1, 3, "3", "full")] == [1, 3, 3, 1]
    for bad in (2, "all", True, 0):
        with pytest.raises(ValueError, match="1, 3 or 'full'"):
            TestTransform(num_crops=bad)


def test_numpy_and_torch_inputs_agree():
    clip = column_clip()
    transform = TestTransform()
    assert torch.equal(transform(clip), transform(torch.from_numpy(clip)))


def test_bad_inputs_and_arguments_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        TestTransform()(np.zeros((2, 256, 256, 3), np.float32))
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform(scale_range=(200, 300), crop_size=224)
    with pytest.raises(ValueError, match="num_crops"):
        TestTransform(num_crops=2)
    with pytest.raises(ValueError, match="std"):
        TrainTransform(mean=(0, 0, 0), std=(1, 0, 1))


def test_normalization_presets():
    assert normalization("caffe2") == ((0.45,) * 3, (0.225,) * 3)
    mean, std = normalization("caffe2_msra")
    out = TestTransform(mean=mean, std=std)(constant_clip((123, 116, 103), height=256, width=256))
    # Caffe2 MSRA weights expect 0-255 pixels minus the pixel mean.
    assert torch.allclose(out[0, :, 0, 0, 0], torch.tensor([0.2283, 0.0535, 0.0199]), atol=1e-3)
    with pytest.raises(ValueError, match="torchvision"):
        normalization("imagenet21k")


@pytest.mark.parametrize("preset", sorted(NORMALIZATIONS))
def test_uint8_output_normalized_later_equals_float_output(preset):
    """output_dtype="uint8" defers normalization to `normalize_on_device`: same numbers."""
    mean, std = NORMALIZATIONS[preset]
    frames = np.random.default_rng(0).integers(0, 256, (4, 72, 96, 3), dtype=np.uint8)
    train = dict(scale_range=(64, 80), crop_size=48, mean=mean, std=std)
    as_float = TrainTransform(**train)(frames, np.random.default_rng(5))
    as_uint8 = TrainTransform(**train, output_dtype="uint8")(frames, np.random.default_rng(5))
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == as_float.shape == (3, 4, 48, 48)
    assert torch.equal(normalize_on_device(as_uint8, mean, std), as_float)
    # Without a resize the clip is a crop of the frames: it must not keep them all alive.
    unscaled = TrainTransform(scale_range=(72, 72), crop_size=72, output_dtype="uint8")
    as_uint8 = unscaled(frames, np.random.default_rng(5))
    assert as_uint8.untyped_storage().nbytes() == as_uint8.numel() == 3 * 4 * 72 * 72
    test = dict(short_side=64, crop_size=64, num_crops=3, mean=mean, std=std)
    as_float = TestTransform(**test)(frames)
    as_uint8 = TestTransform(**test, output_dtype="uint8")(frames)
    assert as_uint8.shape == as_float.shape == (3, 3, 4, 64, 64)
    assert torch.equal(normalize_on_device(as_uint8, mean, std), as_float)


def test_uint8_test_views_are_channels_last_3d_and_normalize_to_any_dtype_and_layout():
    frames = column_clip(frames=3, height=64, width=80)
    views = TestTransform(short_side=64, crop_size=64, output_dtype="uint8")(frames)
    assert views.is_contiguous(memory_format=torch.channels_last_3d)
    out = normalize_on_device(
        views, MEAN, STD, dtype=torch.bfloat16, memory_format=torch.contiguous_format
    )
    assert out.dtype == torch.bfloat16 and out.is_contiguous()
    expected = normalize_on_device(views, MEAN, STD)
    torch.testing.assert_close(out.float(), expected, atol=0.02, rtol=0.01)
    assert normalize_on_device(views, MEAN, STD).is_contiguous(memory_format=torch.channels_last_3d)


def test_uint8_output_and_normalize_on_device_reject_bad_arguments():
    with pytest.raises(ValueError, match="output_dtype"):
        TrainTransform(output_dtype="float16")
    with pytest.raises(ValueError, match="output_dtype"):
        TestTransform(output_dtype="int8")
    with pytest.raises(ValueError, match="uint8 clips"):
        normalize_on_device(torch.zeros(3, 2, 8, 8), MEAN, STD)
    with pytest.raises(ValueError, match="uint8 clips"):
        normalize_on_device(torch.zeros(4, 2, 8, 8, dtype=torch.uint8), MEAN, STD)
