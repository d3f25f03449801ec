"""Activation checkpointing is exact: losses, gradients, dropout and BN running statistics."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from videogn.models import create_model
from videogn.models.checkpointing import run_checkpointed
from videogn.models.i3d import CHECKPOINT_STAGES

TOY = dict(base_width=8, stage_depths=(2, 1, 1, 1), num_classes=5, dropout=0.5)
CLIP = (4, 3, 8, 16, 16)


def _toy_model(norm: str, stages=()) -> nn.Module:
    torch.manual_seed(0)
    norm_kwargs = {"num_groups": 4} if norm == "gn" else {}
    model = create_model("i3d_r50", norm=norm, norm_kwargs=norm_kwargs, **TOY)
    # Non-zero last gammas, so that every block's branch carries gradient.
    model = model.double().train()
    for m in model.modules():
        if getattr(m, "weight", None) is not None and m.weight.dim() == 1:
            nn.init.uniform_(m.weight, 0.5, 1.5)
    model.set_activation_checkpointing(stages)
    return model


def _train(model: nn.Module, steps: int = 3):
    """Losses, last gradients and buffers after ``steps`` SGD steps on fixed data and seeds."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    losses = []
    for step in range(steps):
        clip = torch.randn(CLIP, generator=data, dtype=torch.float64)
        labels = torch.randint(0, 5, CLIP[:1], generator=data)
        torch.manual_seed(100 + step)  # the dropout masks
        loss = F.cross_entropy(model(clip), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return losses, grads, {n: b.clone() for n, b in model.named_buffers()}


def _assert_same_run(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-12, abs=0)
    for got, expected in ((a[1], b[1]), (a[2], b[2])):
        assert got.keys() == expected.keys()
        for name in got:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("norm", ["bn", "gn"])
@pytest.mark.parametrize("stages", ["all", ["res2", "res3"], ["stem"]])
def test_checkpointed_training_equals_plain_training_in_float64(norm, stages):
    plain = _train(_toy_model(norm))
    checkpointed = _train(_toy_model(norm, stages))
    _assert_same_run(checkpointed, plain)
    if norm == "bn":  # the running statistics moved, and moved once per step
        assert plain[2]["res2.0.norm_a.num_batches_tracked"].item() == 3
        assert not torch.equal(plain[2]["res2.0.norm_a.running_mean"], torch.zeros(8).double())


def test_naive_recomputation_would_update_bn_running_statistics_twice():
    # What the running-statistics check guards against: torch.utils.checkpoint alone.
    model = _toy_model("bn")
    block = model.res2[0]
    x = torch.randn(2, 8, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    checkpoint(block, x, use_reentrant=False).sum().backward()
    assert block.norm_a.num_batches_tracked.item() == 2
    ours = _toy_model("bn").res2[0]
    run_checkpointed(ours, x).sum().backward()
    assert ours.norm_a.num_batches_tracked.item() == 1


def test_dropout_inside_a_checkpointed_segment_draws_the_same_mask():
    torch.manual_seed(0)
    segment = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.ReLU())
    segment = segment.double().train()
    x = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)
    results = []
    for run in (segment, lambda x: run_checkpointed(segment, x)):
        torch.manual_seed(5)
        y = run(x)
        after = torch.rand(3)  # the RNG stream continues the same way after the segment
        (dx,) = torch.autograd.grad((y * torch.arange(16.0).double()).sum(), x)
        results.append((y.detach(), dx, after))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_stage_names_and_the_all_and_none_shorthands():
    model = _toy_model("gn")
    model.set_activation_checkpointing("all")
    assert model.checkpointed_stages == CHECKPOINT_STAGES
    model.set_activation_checkpointing(["res3", "stem"])
    assert model.checkpointed_stages == ("stem", "res3")  # network order
    model.set_activation_checkpointing("none")
    assert model.checkpointed_stages == ()
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['res6'\].*'all' or 'none'"):
        model.set_activation_checkpointing(["res2", "res6"])
    built = create_model("i3d_r50", norm="gn", activation_checkpointing=["res2"], **TOY)
    assert built.checkpointed_stages == ("res2",)


def test_checkpointing_keeps_fewer_tensors_for_backward():
    def saved_bytes(model):
        total = []

        def pack(t):
            total.append(t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(CLIP, dtype=torch.float64))
        return sum(total)

    assert saved_bytes(_toy_model("bn", "all")) < 0.5 * saved_bytes(_toy_model("bn"))
