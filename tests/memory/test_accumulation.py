"""What the planner promises about accumulation: exact for GN, not for BN.

One step of 8 clips against 2 accumulated steps of 4 (each loss halved), in float64 with no
dropout, so that float rounding is the only difference left where the maths agree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videogn.memory.plan import accumulation_matches_large_batch
from videogn.models import create_model


def gradients(model, clips, labels, chunks: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    for clip_chunk, label_chunk in zip(clips.chunk(chunks), labels.chunk(chunks), strict=True):
        (F.cross_entropy(model(clip_chunk), label_chunk) / chunks).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def relative_differences(norm: str, norm_kwargs: dict) -> tuple[bool, list[float]]:
    torch.manual_seed(0)
    model = (
        create_model(
            "i3d_r50",
            norm=norm,
            norm_kwargs=norm_kwargs,
            base_width=8,
            stage_depths=(1, 1, 1, 1),
            num_classes=5,
            dropout=0.0,
            zero_init_last_norm=False,
        )
        .double()
        .train()
    )
    clips = torch.randn(8, 3, 8, 32, 32, dtype=torch.float64)
    labels = torch.arange(8) % 5
    one_step = gradients(model, clips, labels, chunks=1)
    accumulated = gradients(model, clips, labels, chunks=2)
    differences = [
        ((one_step[n] - accumulated[n]).norm() / one_step[n].norm().clamp_min(1e-30)).item()
        for n in one_step
    ]
    return accumulation_matches_large_batch(model), differences


def test_gn_batch_8_equals_two_accumulated_batches_of_4():
    exact, differences = relative_differences("gn", {"num_groups": 4})
    assert exact
    assert max(differences) < 1e-10


def test_bn_batch_8_differs_from_two_accumulated_batches_of_4():
    exact, differences = relative_differences("bn", {})
    assert not exact
    # BN's statistics over 4 clips are not those over 8: the gradients move visibly.
    assert max(differences) > 1e-3


@pytest.mark.parametrize("norm", ["frozen_bn", "ln"])
def test_norms_without_batch_statistics_accumulate_exactly(norm):
    exact, differences = relative_differences(norm, {})
    assert exact and max(differences) < 1e-10
