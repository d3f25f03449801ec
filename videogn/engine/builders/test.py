"""The ``test`` group -> :class:`~videogn.engine.evaluate.TestOptions` and the test transform."""

from __future__ import annotations

from omegaconf import DictConfig

from videogn.config import enum_value
from videogn.data.transforms import TestTransform, parse_num_crops
from videogn.engine.builders.data import DataSpec
from videogn.engine.evaluate import TestHead, TestOptions
from videogn.models.i3d import res5_size


def build_test_options(
    test_cfg: DictConfig, *, train_frames: int = 8, train_crop_size: int = 32
) -> TestOptions:
    """The ``test`` group as :class:`TestOptions`.

    Args:
        train_frames, train_crop_size: the *training* clip (``sampler.num_frames``,
            ``data.crop_size``), whose res5 map (T/8 x crop/32 x crop/32) is the window of the
            ``fully_conv`` head, as the Non-local and PySlowFast test models size their pool5.
    """
    t = test_cfg
    head = enum_value(t.head)
    window = res5_size(train_frames, train_crop_size, train_crop_size)
    return TestOptions(
        num_clips=t.num_clips,
        num_crops=parse_num_crops(t.num_crops),  # 1, 3 or full: checked before training
        short_side=t.short_side,
        crop_size=t.crop_size,
        aggregate=enum_value(t.aggregate),
        views_per_batch=t.views_per_batch,
        num_workers=t.num_workers,
        max_videos=t.max_videos,
        head=TestHead(head, window if head == "fully_conv" else None),
        clip_positions=enum_value(t.clip_positions),
    )


def build_test_transform(options: TestOptions, data: DataSpec) -> TestTransform:
    """Resize to the test's short side and take its crops, with the data's normalization."""
    mean, std = data.normalization
    return TestTransform(
        short_side=options.short_side,
        crop_size=options.crop_size,
        num_crops=options.num_crops,
        mean=mean,
        std=std,
        output_dtype=data.output_dtype,
    )
