"""The channels-last GroupNorm: equal to nn.GroupNorm forward and backward, in every layout."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videogn.models import create_model
from videogn.models.group_norm import (
    CUSTOM_KERNEL_RANGE,
    ChannelsLastGroupNorm,
    group_norm_channels_last,
)
from videogn.models.norm import get_norm_layer, norm_kind

CL = torch.channels_last_3d


def _clip_batch(shape=(2, 8, 3, 5, 5), dtype=torch.float64, offset=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).mul(3).add(offset).to(dtype)


def _affine(channels, seed=1):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, generator=g, dtype=torch.float64)
    return weight, torch.randn(channels, generator=g, dtype=torch.float64)


def _forward_backward(fn, x, weight, bias, grad):
    """fn(x, weight, bias) -> (y, dx, dweight, dbias) for the upstream gradient ``grad``."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    y = fn(*leaves)
    y.backward(grad)
    return (y, *(t.grad for t in leaves))


@pytest.mark.parametrize("groups", [1, 2, 4, 8])  # LayerNorm, GN, GN, InstanceNorm
def test_equals_nn_group_norm_forward_and_backward_in_float64(groups):
    x = _clip_batch().contiguous(memory_format=CL)
    weight, bias = _affine(8)
    grad = _clip_batch(seed=2).contiguous(memory_format=CL)
    ours = _forward_backward(
        lambda x, w, b: group_norm_channels_last(x, groups, w, b), x, weight, bias, grad
    )
    torch_gn = _forward_backward(
        lambda x, w, b: F.group_norm(x.contiguous(), groups, w, b), x, weight, bias, grad
    )
    for a, b in zip(ours, torch_gn, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradients_pass_gradcheck_with_and_without_affine():
    x = _clip_batch((2, 4, 2, 3, 3)).contiguous(memory_format=CL).requires_grad_()
    weight, bias = (t[:4].requires_grad_() for t in _affine(4))
    assert torch.autograd.gradcheck(
        lambda *a: group_norm_channels_last(a[0], 2, *a[1:]), (x, weight, bias)
    )
    assert torch.autograd.gradcheck(lambda x: group_norm_channels_last(x, 2), (x,))


def test_bfloat16_matches_float32_group_norm_of_the_same_input():
    # bf16 in, bf16 out, affine and statistics in float32, as CPU autocast runs nn.GroupNorm.
    x = _clip_batch((2, 64, 2, 6, 6), dtype=torch.bfloat16).contiguous(memory_format=CL)
    weight, bias = (t.float() for t in _affine(64))
    grad = _clip_batch((2, 64, 2, 6, 6), dtype=torch.bfloat16, seed=2).contiguous(memory_format=CL)
    y, dx, dw, db = _forward_backward(
        lambda x, w, b: group_norm_channels_last(x, 32, w, b), x, weight, bias, grad
    )
    assert (y.dtype, dx.dtype, dw.dtype) == (torch.bfloat16, torch.bfloat16, torch.float32)
    assert y.is_contiguous(memory_format=CL) and dx.is_contiguous(memory_format=CL)
    ref = _forward_backward(
        lambda x, w, b: F.group_norm(x, 32, w, b), x.float(), weight, bias, grad.float()
    )
    # Outputs are rounded to bf16 (8 bits of mantissa): within one bf16 step of their size.
    for ours, expected in zip((y, dx), ref[:2], strict=True):
        torch.testing.assert_close(ours.float(), expected, rtol=2**-7, atol=2**-7)
    # Parameter gradients sum 144 bf16-rounded terms per channel, accumulated in float32.
    torch.testing.assert_close(dw, ref[2], rtol=0.02, atol=0.05)
    torch.testing.assert_close(db, ref[3], rtol=0.02, atol=0.05)


def test_variance_stays_accurate_when_the_mean_dwarfs_the_std():
    # |mean| = 100 std: E[x^2] - E[x]^2 in float32 loses ~5% of the variance here.
    x64 = _clip_batch((2, 64, 4, 14, 14), offset=0).div(3).add(100)
    expected = F.group_norm(x64, 32)
    ours = group_norm_channels_last(x64.float().contiguous(memory_format=CL), 32)
    torch.testing.assert_close(ours.double(), expected, rtol=0, atol=1e-4)


def test_output_is_not_a_view_so_an_inplace_relu_can_follow():
    x = _clip_batch().float().contiguous(memory_format=CL).requires_grad_()
    gn = ChannelsLastGroupNorm(4, 8)
    torch.relu_(gn(x)).sum().backward()  # autograd forbids this on a view made in a Function
    x_ref = x.detach().contiguous().requires_grad_()
    reference = nn.GroupNorm(4, 8)
    F.relu(reference(x_ref)).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_module_is_an_nn_group_norm_with_its_state_dict():
    gn = get_norm_layer("gn", num_groups=32)(64)
    assert isinstance(gn, ChannelsLastGroupNorm) and isinstance(gn, nn.GroupNorm)
    assert norm_kind(gn) == "gn"
    reference = nn.GroupNorm(32, 64)
    assert gn.state_dict().keys() == reference.state_dict().keys()
    gn.load_state_dict(reference.state_dict())


@pytest.mark.parametrize(
    ("layout", "dtype", "groups", "custom"),
    [
        (torch.contiguous_format, torch.float32, 32, False),  # NCDHW: torch's kernel
        (CL, torch.float32, 32, True),  # 2 channels per group
        (CL, torch.float32, 8, False),  # 8 channels per group: torch's kernel is faster
        (CL, torch.bfloat16, 8, True),
        (CL, torch.bfloat16, 4, False),  # 16 channels per group
    ],
)
def test_module_picks_the_kernel_by_layout_and_group_width(layout, dtype, groups, custom):
    gn = ChannelsLastGroupNorm(groups, 64)
    x = _clip_batch((2, 64, 2, 32, 32), dtype=dtype).contiguous(memory_format=layout)
    y = gn(x.requires_grad_())
    assert (type(y.grad_fn).__name__ == "_GroupNormChannelsLastBackward") == custom
    assert y.dtype == dtype and y.is_contiguous(memory_format=layout)


def test_small_tensors_keep_torchs_kernel():
    x = _clip_batch((2, 64, 2, 4, 4), dtype=torch.float32).contiguous(memory_format=CL)
    y = ChannelsLastGroupNorm(32, 64)(x.requires_grad_())
    assert type(y.grad_fn).__name__ == "NativeGroupNormBackward0"


def test_channels_last_model_matches_the_ncdhw_model(monkeypatch):
    # float32: float64 convolutions have no channels-last kernel and would return NCDHW. The toy
    # tensors are below the size where the custom kernel pays: allow it anyway.
    monkeypatch.setitem(CUSTOM_KERNEL_RANGE, torch.float32, (2, 0))
    kernels = set()

    def record_kernel(module, inputs, output):
        kernels.add(type(output.grad_fn).__name__)

    def run(memory_format):
        torch.manual_seed(0)
        model = create_model(
            "i3d_r50",
            norm="gn",
            norm_kwargs={"num_groups": 4},
            base_width=8,
            stage_depths=(1, 1, 1, 1),
            num_classes=3,
            dropout=0.0,
            zero_init_last_norm=False,
        )
        model = model.to(memory_format=memory_format)
        for m in model.modules():
            if isinstance(m, nn.GroupNorm):
                m.register_forward_hook(record_kernel)
        clip = _clip_batch((2, 3, 8, 16, 16), dtype=torch.float32)
        logits = model(clip.contiguous(memory_format=memory_format))
        F.cross_entropy(logits, torch.tensor([0, 2])).backward()
        return logits, model.stem.norm.weight.grad, model.res2[0].norm_a.weight.grad

    ncdhw = run(torch.contiguous_format)
    assert kernels == {"NativeGroupNormBackward0"}
    # The stem and res2 norms have 8 channels in 4 groups: they take the custom kernel.
    for a, b in zip(run(CL), ncdhw, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert "_GroupNormChannelsLastBackward" in kernels


def test_bad_group_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_groups=3.*shape \\(2, 8, 3, 5, 5\\)"):
        group_norm_channels_last(_clip_batch(), 3)
