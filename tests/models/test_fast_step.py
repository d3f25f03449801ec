"""bf16 autocast + channels_last_3d train the toy I3D as fp32 NCDHW does, iteration by iteration."""

import pytest
import torch
import torch.nn.functional as F

from videogn.models import create_model

ITERATIONS = 50
# bf16 keeps 8 bits of mantissa; over 50 SGD steps the loss curves stay within this band.
ABS_TOL, REL_TOL = 0.05, 0.1


@pytest.fixture(autouse=True)
def _one_thread():
    # Without bf16 hardware, bf16 convolutions fall back to slow kernels that crawl when two
    # threads fight other processes for two cores: 50 steps take 2 s on one thread, 50 s on two.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task(clips_per_batch=8, classes=4, shape=(3, 8, 16, 16)):
    """Two batches of a learnable task: a fixed template per class under unit noise."""
    g = torch.Generator().manual_seed(1)
    templates = torch.randn(classes, *shape, generator=g)
    labels = torch.arange(2 * clips_per_batch) % classes
    clips = 0.5 * templates[labels] + torch.randn(2 * clips_per_batch, *shape, generator=g)
    return clips.split(clips_per_batch), labels.split(clips_per_batch)


def _losses(norm: str, *, bf16: bool, channels_last: bool, iterations=ITERATIONS) -> torch.Tensor:
    torch.manual_seed(0)
    model = create_model(
        "i3d_r50",
        norm=norm,
        norm_kwargs={"num_groups": 4} if norm == "gn" else None,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
        num_classes=4,
        dropout=0.0,
    )
    clips, labels = _task()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        clips = [c.contiguous(memory_format=torch.channels_last_3d) for c in clips]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    losses = []
    for i in range(iterations):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model.train()(clips[i % 2]), labels[i % 2])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return torch.tensor(losses)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_bf16_channels_last_loss_tracks_fp32_over_50_iterations(norm):
    reference = _losses(norm, bf16=False, channels_last=False)
    assert reference[-5:].mean() < 0.5 * reference[0]  # the task is learned: curves mean something
    fast = _losses(norm, bf16=True, channels_last=True)
    gap = (fast - reference).abs()
    worst = int(gap.argmax())
    assert (gap <= ABS_TOL + REL_TOL * reference).all(), (
        f"{norm}: bf16 channels-last loss {fast[worst]:.4f} vs fp32 {reference[worst]:.4f} "
        f"at iteration {worst + 1}"
    )


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_channels_last_fp32_matches_ncdhw_step_for_step(norm):
    # Same math in another memory layout: only float32 summation order differs.
    channels_last = _losses(norm, bf16=False, channels_last=True, iterations=5)
    ncdhw = _losses(norm, bf16=False, channels_last=False, iterations=5)
    torch.testing.assert_close(channels_last, ncdhw, rtol=1e-4, atol=1e-5)
