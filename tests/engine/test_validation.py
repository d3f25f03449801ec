"""Periodic validation (Figure 7's monitor): rows at every period and at the end, eval-mode BN
that leaves training untouched, a fixed video subset, and hit counts summed over real gloo
ranks that equal one process's."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from videogn.engine.builders.assemble import train_loader_factory
from videogn.engine.distributed import DistInfo, shard_indices
from videogn.engine.hooks import MetricsLogger, PreciseBNHook
from videogn.engine.metrics import read_metrics
from videogn.engine.optim import StepWarmupSchedule, build_scheduler, build_sgd
from videogn.engine.trainer import Trainer, TrainOptions
from videogn.engine.validation import ValidationHook, choose_videos, count_hits
from videogn.models.factory import create_model


class ColourClips(Dataset):
    """Clips whose class (0..3) is a colour offset; the noise is redrawn every epoch, so a
    validation run at another step sees other clips of the same videos."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        label = i % 4
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch * 100 + i)
        clip = torch.randn(3, 8, 16, 16, generator=generator)
        clip[label % 3] += 1.0 if label < 3 else -1.0
        return {"clip": clip, "label": label, "index": i}


def make_trainer(
    run_dir, validation: ValidationHook | None, precise_bn=None, train_clips=None
) -> Trainer:
    torch.manual_seed(0)
    model = create_model(
        "i3d_r50", norm="bn", num_classes=4, base_width=8, stage_depths=(1, 1, 1, 1), dropout=0.5
    )
    make_loader, batches = train_loader_factory(
        train_clips or ColourClips(16), batch_size=4, num_workers=0, dist=DistInfo()
    )
    optimizer = build_sgd(model, 0.1)
    return Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, StepWarmupSchedule(2 * batches)),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        train_batches=make_loader,
        dist=DistInfo(),
        run_dir=run_dir,
        options=TrainOptions(
            total_iterations=2 * batches, iterations_per_epoch=batches, clips_per_iteration=4
        ),
        hooks=[
            MetricsLogger(period=2, progress_bar=False),
            *([precise_bn] if precise_bn else []),
            *([validation] if validation else []),
        ],
    )


def test_rows_at_every_period_and_at_the_end_without_changing_training(tmp_path):
    hook = ValidationHook(
        ColourClips(12, seed=7), range(12), num_videos=12, period=3, batch_size=5, log_period=2
    )
    validated = make_trainer(tmp_path / "val", hook)
    assert validated.fit() == "finished"  # 8 iterations
    plain = make_trainer(tmp_path / "plain", None)  # same seed: same weights, same dropout
    assert plain.fit() == "finished"

    rows = read_metrics(tmp_path / "val" / "metrics.jsonl", "val")
    assert [r["step"] for r in rows] == [3, 6, 8]  # every 3 iterations, then the final model
    for row in rows:
        assert row["num_videos"] == 12
        assert 0 <= row["top5_err"] <= row["top1_err"] <= 100
        assert 0 <= row["train_top1_err"] <= 100
        assert row["epochs"] == row["step"] / 4  # 4 iterations per epoch
    # Eval mode: BN running statistics, dropout and the data order are untouched, so the
    # trained weights and buffers are those of the run without validation, bit for bit.
    trained, reference = validated.model.state_dict(), plain.model.state_dict()
    for name, value in reference.items():
        assert torch.equal(trained[name], value), name
    train_rows = read_metrics(tmp_path / "val" / "metrics.jsonl", "train")
    assert all(r["top1_err"] == pytest.approx(100 - r["top1"]) for r in train_rows)


class StatisticsSeen(ValidationHook):
    """The validation hook, noting the BN running mean each run validates with."""

    def validate(self) -> dict:
        bn = next(m for m in self.trainer.model.modules() if isinstance(m, nn.BatchNorm3d))
        self.seen[self.trainer.position.global_iteration] = bn.running_mean.clone()
        return super().validate()


class PreciseBNNoted(PreciseBNHook):
    """Precise BN, noting the BN running mean it leaves at each epoch's end."""

    def after_epoch(self):
        super().after_epoch()
        bn = next(m for m in self.trainer.model.modules() if isinstance(m, nn.BatchNorm3d))
        self.left.append(bn.running_mean.clone())


def test_a_period_ending_an_epoch_validates_after_precise_bn(tmp_path):
    """With val_period a multiple of the epoch (Kinetics, Table 8), the point is the model
    the epoch's checkpoint holds: precise BN's statistics, not the running averages."""
    hook = StatisticsSeen(ColourClips(12, seed=7), range(12), num_videos=12, period=4,
                          batch_size=6)  # fmt: skip
    hook.seen = {}
    bn_clips = torch.stack([ColourClips(8, seed=3)[i]["clip"] for i in range(4)])
    precise_bn = PreciseBNNoted(lambda epoch, seed: [bn_clips], num_batches=1)
    precise_bn.left = []
    trainer = make_trainer(tmp_path, hook, precise_bn)
    assert trainer.fit() == "finished"  # 2 epochs of 4 iterations
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "val")] == [4, 8]
    assert sorted(hook.seen) == [4, 8]
    for step, left in zip((4, 8), precise_bn.left, strict=True):
        assert torch.equal(hook.seen[step], left), step


class BNSeenInForward(ValidationHook):
    """The validation hook, noting the BN running mean before each run and during it."""

    def validate(self) -> dict:
        self.before[self.trainer.position.global_iteration] = self.first_bn().running_mean.clone()
        return super().validate()

    def forward(self, clips):  # the last call of a run is the validation's own (eval mode)
        self.during[self.trainer.position.global_iteration] = self.first_bn().running_mean.clone()
        return super().forward(clips)

    def first_bn(self) -> nn.Module:
        return next(m for m in self.trainer.model.modules() if isinstance(m, nn.BatchNorm3d))


def train_with_precise_bn(run_dir, with_validation: bool):
    """BN, 2 epochs of 4 iterations, precise BN at epoch ends; the monitor every 3 iterations
    (3 and 6 mid-epoch, then the end) with precise BN before each point. Precise BN draws from
    the *training* dataset object, through the run's own loader factory, in-process
    (num_workers=0): as ``build_trainer`` wires it."""
    train_clips = ColourClips(16)
    make_bn_loader, _ = train_loader_factory(train_clips, batch_size=4, num_workers=0,
                                             dist=DistInfo())  # fmt: skip

    def bn_batches(epoch, seed):
        return (batch["clip"] for batch in make_bn_loader(epoch, 0, seed + 1))

    hook = None
    if with_validation:
        hook = BNSeenInForward(ColourClips(12, seed=7), range(12), num_videos=12, period=3,
                               batch_size=6, precise_bn_batches=bn_batches,
                               precise_bn_num_batches=2)  # fmt: skip
        hook.before, hook.during = {}, {}
    trainer = make_trainer(run_dir, hook, PreciseBNHook(bn_batches, 2), train_clips)
    assert trainer.fit() == "finished"
    return trainer, hook


def test_precise_bn_before_each_point_leaves_training_bit_identical(tmp_path):
    validated, hook = train_with_precise_bn(tmp_path / "val", with_validation=True)
    plain, _ = train_with_precise_bn(tmp_path / "plain", with_validation=False)
    # weights, and BN buffers restored after each point: the run without the monitor's
    for name, value in plain.model.state_dict().items():
        assert torch.equal(validated.model.state_dict()[name], value), name
    rows = read_metrics(tmp_path / "val" / "metrics.jsonl", "val")
    assert [r["step"] for r in rows] == [3, 6, 8]
    assert all(r["bn_stats"] == "precise" and r["num_failed"] == 0 for r in rows)
    # mid-epoch: population statistics computed for the point, not the running averages
    for step in (3, 6):
        assert "precise_bn_seconds" in rows[[3, 6].index(step)]
        assert not torch.allclose(hook.during[step], hook.before[step]), step
    # the epoch's end: the statistics the epoch's precise BN just left, not computed again
    assert "precise_bn_seconds" not in rows[2]
    assert torch.equal(hook.during[8], hook.before[8])


def test_without_precise_bn_the_row_says_running_statistics(tmp_path):
    hook = ValidationHook(ColourClips(12, seed=7), range(12), num_videos=12, period=3,
                          batch_size=6)  # fmt: skip
    assert make_trainer(tmp_path, hook).fit() == "finished"
    rows = read_metrics(tmp_path / "metrics.jsonl", "val")
    assert {r["bn_stats"] for r in rows} == {"running"}


class SomeFail(ColourClips):
    """Videos 2 and 5 cannot be decoded: failed items, as ``substitute_failures=False``."""

    def __getitem__(self, i):
        if i in (2, 5):
            return {"clip": None, "label": i % 4, "index": i, "error": "moov atom not found"}
        return super().__getitem__(i)


def test_failed_validation_videos_are_counted_in_the_row_not_replaced(tmp_path):
    hook = ValidationHook(SomeFail(12, seed=7), range(12), num_videos=12, period=4,
                          batch_size=5)  # fmt: skip
    assert make_trainer(tmp_path, hook).fit() == "finished"
    rows = read_metrics(tmp_path / "metrics.jsonl", "val")
    assert [(r["num_videos"], r["num_failed"]) for r in rows] == [(10, 2), (10, 2)]


def test_the_subset_is_fixed_by_the_seed_and_drawn_from_the_whole_list():
    subset = choose_videos(1000, 50, seed=3)
    assert subset == choose_videos(1000, 50, seed=3) == sorted(set(subset))
    assert len(subset) == 50 and subset != choose_videos(1000, 50, seed=4)
    assert max(subset) > 500  # not simply the head of the list
    assert choose_videos(10, None, seed=0) == choose_videos(10, 99, seed=0) == list(range(10))
    with pytest.raises(ValueError, match="trainer.val_videos"):
        choose_videos(10, 0, seed=0)


def test_a_bad_period_is_named():
    with pytest.raises(ValueError, match="trainer.val_period"):
        ValidationHook(ColourClips(4), range(4), num_videos=4, period=-5, batch_size=2)


def linear_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 16 * 16, 4))


def batches_of(dataset, indices, batch_size=3):
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size
    )
    return iter(loader)


def _count_on_rank(rank: int, world: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = linear_model()
        mine = shard_indices(11, rank, world)  # 6 and 5 videos: unequal shards
        counts = count_hits(model, batches_of(ColourClips(11), mine), model, torch.device("cpu"))
        queue.put((rank, counts.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_hits_summed_over_two_gloo_ranks_equal_one_process(run_on_two_ranks):
    model = linear_model()
    expected = count_hits(model, batches_of(ColourClips(11), range(11)), model, "cpu").tolist()
    assert expected[2] == 11
    results = run_on_two_ranks(_count_on_rank)
    assert results[0] == results[1] == expected
