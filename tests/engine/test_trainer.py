"""The loop's options on a tiny in-memory dataset: accumulation, bf16 autocast,
channels_last_3d, max_iterations, and NaN diagnosis."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from videogn.engine.builders import train_loader_factory
from videogn.engine.checkpoint import list_checkpoints
from videogn.engine.distributed import DistInfo
from videogn.engine.guards import NonFiniteLossError
from videogn.engine.optim import StepWarmupSchedule, build_scheduler, build_sgd
from videogn.engine.trainer import Trainer, TrainOptions
from videogn.models.factory import create_model


class ColourClips(Dataset):
    """16 clips whose class (0..3) is a colour offset: learnable in a few steps."""

    seed = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 16

    def __getitem__(self, i):
        label = i % 4
        clip = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(i))
        clip[label % 3] += 1.0 if label < 3 else -1.0
        return {"clip": clip, "label": label, "index": i}


def make_trainer(tmp_path, *, batch_size=4, lr=0.1, norm="gn", **options) -> Trainer:
    torch.manual_seed(0)
    model = create_model(
        "i3d_r50",
        norm=norm,
        norm_kwargs={"num_groups": 4} if norm == "gn" else None,
        num_classes=4,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
        dropout=0.0,
    )
    dist = DistInfo()
    make_loader, batches = train_loader_factory(
        ColourClips(), batch_size=batch_size, num_workers=0, dist=dist
    )
    accumulation = options.get("accumulation_steps", 1)
    iterations = batches // accumulation
    optimizer = build_sgd(model, lr)
    scheduler = build_scheduler(optimizer, StepWarmupSchedule(iterations * 2))
    defaults = dict(
        total_iterations=iterations * 2,
        iterations_per_epoch=iterations,
        clips_per_iteration=batch_size * accumulation,
        log_period=1,
        progress_bar=False,
    )
    return Trainer(
        model,
        optimizer,
        scheduler,
        torch.amp.GradScaler("cpu", enabled=False),
        make_loader,
        lambda epoch, seed: (b["clip"] for b in make_loader(epoch, 0, seed)),
        dist,
        tmp_path,
        {},
        TrainOptions(**{**defaults, **options}),
    )


def test_accumulation_matches_the_large_batch(tmp_path):
    # GroupNorm: a clip's output does not depend on the others, so 2 x 2 clips == 4 clips.
    large = make_trainer(tmp_path / "a", batch_size=4, max_iterations=1)
    small = make_trainer(tmp_path / "b", batch_size=2, accumulation_steps=2, max_iterations=1)
    assert large.fit() == small.fit() == "stopped"
    for (name, p), q in zip(large.model.named_parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_and_channels_last_train(tmp_path):
    trainer = make_trainer(
        tmp_path,
        amp_dtype=torch.bfloat16,
        channels_last_3d=True,
        norm="bn",
        precise_bn_batches=2,
    )
    trainer.model.to(memory_format=torch.channels_last_3d)
    assert trainer.fit() == "finished"
    assert trainer.position.global_iteration == 8 and trainer.position.epoch == 2
    assert len(list_checkpoints(tmp_path)) == 2


def test_nan_stops_before_the_step_with_a_diagnosis(tmp_path):
    trainer = make_trainer(tmp_path, lr=1e9, checkpoint_period=1)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit()
    message = str(error.value)
    failed = trainer.position.global_iteration + 1
    assert f"iteration {failed}" in message and "lr=" in message and "stem.conv" in message
    assert "first layer with a non-finite output" in message
    saved = [int(p.stem.split("_")[1]) for p in list_checkpoints(tmp_path)]
    assert max(saved) == failed - 1  # the last good checkpoint, nothing after


@pytest.mark.parametrize("channels_last", [False, True])
def test_uint8_batches_reach_the_model_as_the_float_transform_output(channels_last):
    """data.output_dtype=uint8 (the default) normalizes on the device: the model sees exactly
    the tensor the float transforms would have made, in the memory format it runs in."""
    import numpy as np

    from videogn.data.transforms import NORMALIZATIONS, TestTransform, TrainTransform
    from videogn.engine.trainer import model_input

    mean, std = NORMALIZATIONS["torchvision"]
    frames = np.random.default_rng(0).integers(0, 256, (8, 40, 52, 3), dtype=np.uint8)
    train = dict(scale_range=(36, 44), crop_size=32, flip_p=0.5, mean=mean, std=std)
    as_float = TrainTransform(**train)(frames, np.random.default_rng(1))
    as_uint8 = TrainTransform(**train, output_dtype="uint8")(frames, np.random.default_rng(1))
    batch = torch.stack([as_uint8, as_uint8.flip(-1)])
    seen = model_input(batch, (mean, std), channels_last)
    assert seen.dtype == torch.float32
    assert torch.equal(seen, torch.stack([as_float, as_float.flip(-1)]))
    assert seen.is_contiguous(memory_format=torch.channels_last_3d) == channels_last

    test = dict(short_side=36, crop_size=36, num_crops=3, mean=mean, std=std)
    views = TestTransform(**test, output_dtype="uint8")(frames)
    assert views.is_contiguous(memory_format=torch.channels_last_3d)  # as decoded
    seen = model_input(views, (mean, std), channels_last)
    assert torch.equal(seen, TestTransform(**test)(frames))
    assert seen.is_contiguous(memory_format=torch.channels_last_3d) == channels_last
    with pytest.raises(ValueError, match="normalization"):
        model_input(batch, None, channels_last)
