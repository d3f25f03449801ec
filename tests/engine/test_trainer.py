"""The loop and its hooks on a tiny in-memory dataset: accumulation, bf16 autocast,
channels_last_3d, max_iterations, NaN diagnosis, the hook contract."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from videogn.engine.builders.assemble import build_hooks, train_loader_factory
from videogn.engine.builders.trainer import TrainerSpec
from videogn.engine.checkpoint import list_checkpoints
from videogn.engine.distributed import DistInfo
from videogn.engine.guards import NonFiniteLossError
from videogn.engine.hooks import HookBase, PreciseBNHook
from videogn.engine.optim import StepWarmupSchedule, build_scheduler, build_sgd
from videogn.engine.trainer import Trainer, TrainOptions
from videogn.models.factory import create_model


class ColourClips(Dataset):
    """16 clips whose class (0..3) is a colour offset: learnable in a few steps."""

    seed = 0

    def __init__(self, size: int = 16):
        self.size = size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 16

    def __getitem__(self, i):
        label = i % 4
        clip = torch.randn(3, 8, self.size, self.size, generator=torch.Generator().manual_seed(i))
        clip[label % 3] += 1.0 if label < 3 else -1.0
        return {"clip": clip, "label": label, "index": i}


def make_trainer(
    tmp_path, *, batch_size=4, lr=0.1, norm="gn", hooks=None, clip_size=16, **options
) -> Trainer:
    """A Trainer as the builders wire it; ``options`` go to TrainOptions or TrainerSpec."""
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
        ColourClips(clip_size), batch_size=batch_size, num_workers=0, dist=dist
    )
    accumulation = options.get("accumulation_steps", 1)
    iterations = batches // accumulation
    optimizer = build_sgd(model, lr)
    hook_keys = set(TrainerSpec.__dataclass_fields__) - set(TrainOptions.__dataclass_fields__)
    hook_options = {k: options.pop(k) for k in list(options) if k in hook_keys}
    spec = TrainerSpec(log_period=1, progress_bar=False, **hook_options)
    loop = dict(total_iterations=iterations * 2, iterations_per_epoch=iterations,
                clips_per_iteration=batch_size * accumulation)  # fmt: skip
    if hooks is None:
        hooks = build_hooks(
            spec, lambda epoch, seed: (b["clip"] for b in make_loader(epoch, 0, seed))
        )
    return Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, StepWarmupSchedule(iterations * 2)),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        train_batches=make_loader,
        dist=dist,
        run_dir=tmp_path,
        options=TrainOptions(**{**loop, **options}),
        hooks=hooks,
    )


def test_accumulation_matches_the_large_batch(tmp_path):
    # GroupNorm: a clip's output does not depend on the others, so 2 x 2 clips == 4 clips.
    large = make_trainer(tmp_path / "a", batch_size=4, max_iterations=1)
    small = make_trainer(tmp_path / "b", batch_size=2, accumulation_steps=2, max_iterations=1)
    assert large.fit() == small.fit() == "stopped"
    for (name, p), q in zip(large.model.named_parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_and_channels_last_train(tmp_path, caplog):
    # On CPUs where oneDNN's bf16 conv weight gradient is wrong, videogn's Conv3d takes its
    # float32 detour (videogn/models/conv.py): this test runs that path as users do.
    trainer = make_trainer(
        tmp_path, amp_dtype=torch.bfloat16, channels_last_3d=True, norm="bn",
        precise_bn_batches=2,
    )  # fmt: skip
    trainer.model.to(memory_format=torch.channels_last_3d)
    seen = []  # the stem's output while training: bf16 under autocast, from channels-last input
    trainer.model.stem.conv.register_forward_hook(
        lambda module, args, out: seen.append(
            (out.dtype, args[0].is_contiguous(memory_format=torch.channels_last_3d))
        )
    )
    with caplog.at_level("INFO"):
        assert trainer.fit() == "finished"
    assert seen and set(seen) == {(torch.bfloat16, True)}
    recomputed = [
        r.getMessage()
        for r in caplog.records
        if "precise BN: population statistics" in r.getMessage()
    ]
    assert len(recomputed) == 2 and "over 2 batches" in recomputed[0]  # at each epoch's end
    assert trainer.position.global_iteration == 8 and trainer.position.epoch == 2
    assert len(list_checkpoints(tmp_path)) == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


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


class Recorder(HookBase):
    """Records each call with the position the hook sees."""

    def __init__(self):
        self.calls = []

    def record(self, point):
        pos = self.trainer.position
        self.calls.append((point, pos.epoch, pos.iteration_in_epoch, pos.global_iteration))

    def __getattribute__(self, name):
        points = ("before_train", "after_train", "before_epoch", "after_epoch", "before_step",
                  "after_backward", "after_step")  # fmt: skip
        if name in points:
            return lambda: self.record(name)
        return super().__getattribute__(name)


def test_hooks_are_called_at_the_contract_points(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, hooks=[recorder])  # 4 iterations per epoch, 2 epochs
    assert trainer.fit() == "finished"
    calls = recorder.calls
    assert calls[0] == ("before_train", 0, 0, 0) and calls[-1] == ("after_train", 2, 0, 8)
    assert calls[1:5] == [("before_epoch", 0, 0, 0), ("before_step", 0, 0, 0),
                          ("after_backward", 0, 0, 0), ("after_step", 0, 1, 1)]  # fmt: skip
    # after_epoch: after the epoch's last iteration, before the epoch counter moves
    assert [c for c in calls if c[0] == "after_epoch"] == [("after_epoch", 0, 4, 4),
                                                            ("after_epoch", 1, 4, 8)]  # fmt: skip
    assert sum(c[0] == "after_step" for c in calls) == 8


def test_trainer_takes_keyword_arguments_only(tmp_path):
    with pytest.raises(TypeError):
        Trainer(None, None, None, None, None, DistInfo(), tmp_path, None)  # type: ignore[misc]


def test_precise_bn_without_bn_says_so_once_and_turns_itself_off(tmp_path, caplog):
    trainer = make_trainer(tmp_path, norm="gn", precise_bn_batches=2)
    (hook,) = [h for h in trainer.hooks if isinstance(h, PreciseBNHook)]
    with caplog.at_level("INFO"):
        assert trainer.fit() == "finished"
    messages = [r.getMessage() for r in caplog.records if "PreciseBNHook" in r.getMessage()]
    assert messages == ["PreciseBNHook: the model has no BatchNorm layer, nothing to recompute; "
                        "turned off"]  # fmt: skip
    assert not hook.enabled
    assert not any("precise BN: population" in r.getMessage() for r in caplog.records)


def test_max_iterations_stops_with_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_iterations=3, checkpoint_period=0)
    assert trainer.fit() == "stopped" and trainer.position.global_iteration == 3
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_00000003.pt"]
