"""GroupNorm under autocast: low-precision in and out, float32 statistics, lean saved tensors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videogn.memory.tracking import AutocastEmulation
from videogn.models import group_norm
from videogn.models.group_norm import ChannelsLastGroupNorm, group_norm_low_precision

CL = torch.channels_last_3d
SHAPE = (2, 64, 2, 12, 12)  # large enough for the channels-last kernel at 8 channels per group
# Our output and dx are float32 results rounded once to bf16/fp16: within half a unit in the
# last place, 2**-8 relative for bf16 (7 stored mantissa bits). Parameter gradients stay
# float32 sums over the same terms, so only summation order separates them.
ROUNDING = {torch.bfloat16: 2**-8, torch.float16: 2**-11}
PARAM_GRAD_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def _low_precision_input(dtype, layout=torch.contiguous_format, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g).mul(2).add(0.5)
    return x.to(dtype).contiguous(memory_format=layout)


def _module(groups=8, seed=1):
    gn = ChannelsLastGroupNorm(groups, SHAPE[1])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gn.weight.copy_(torch.randn(SHAPE[1], generator=g))
        gn.bias.copy_(torch.randn(SHAPE[1], generator=g))
    return gn


def _saved_tensors(run):
    """(dtype, numel) of every tensor autograd saves while ``run()`` executes, and the output."""
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return saved, out


def _assert_lean(saved, x, params):
    """Only x (low precision) and two float32 tensors of N*G numbers, besides the parameters."""
    param_ptrs = {p.data_ptr() for p in params}
    kept = [t for t in saved if t.data_ptr() not in param_ptrs]
    n, groups = x.shape[0], 8
    inputs = [t for t in kept if t.dtype == x.dtype]
    stats = [t for t in kept if t.dtype == torch.float32]
    assert len(inputs) == 1 and inputs[0].shape == x.shape and len(kept) == 3
    assert len(stats) == 2 and all(t.numel() == n * groups for t in stats)
    kept_bytes = sum(t.numel() * t.element_size() for t in kept)
    assert kept_bytes == x.numel() * x.element_size() + 2 * 4 * n * groups


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["ncdhw", "channels_last"])
def test_module_under_cpu_autocast_saves_only_the_bf16_input_and_fp32_group_stats(layout):
    gn = _module()
    x = _low_precision_input(torch.bfloat16, layout).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        saved, y = _saved_tensors(lambda: gn(x))
    assert y.dtype == torch.bfloat16
    _assert_lean(saved, x, gn.parameters())


def test_low_precision_function_saves_only_the_input_and_fp32_group_stats():
    # The path CUDA takes (plain tensor ops), checked here on the CPU.
    gn = _module()
    x = _low_precision_input(torch.bfloat16).requires_grad_()
    saved, y = _saved_tensors(lambda: group_norm_low_precision(x, 8, gn.weight, gn.bias))
    assert y.dtype == torch.bfloat16
    _assert_lean(saved, x, gn.parameters())


def test_plain_group_norm_under_the_cuda_policy_keeps_an_fp32_copy_and_ours_does_not():
    # What the issue is about: CUDA autocast upcasts group_norm's input; ours runs without it.
    x = _low_precision_input(torch.bfloat16).requires_grad_()
    plain, ours = nn.GroupNorm(8, SHAPE[1]), _module()
    with AutocastEmulation(torch.bfloat16, policy="cuda"):
        plain_saved, plain_y = _saved_tensors(lambda: plain(x))
        ours_saved, ours_y = _saved_tensors(lambda: ours(x))
    assert plain_y.dtype == torch.float32 and ours_y.dtype == torch.bfloat16
    assert any(t.dtype == torch.float32 and t.shape == x.shape for t in plain_saved)
    _assert_lean(ours_saved, x, ours.parameters())


def _forward_backward(fn, x, grad, params):
    x = x.detach().clone().requires_grad_()
    for p in params:
        p.grad = None
    y = fn(x)
    y.backward(grad)
    return y, x.grad, *(p.grad.clone() for p in params)


def _fp32_statistics_reference(gn, x, grad):
    """F.group_norm on the same (low-precision) values in float32: float32 statistics."""
    return _forward_backward(
        lambda x: F.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps),
        x.float(),  # a float32 leaf: its gradient is not rounded either
        grad.float(),
        [gn.weight, gn.bias],
    )


@pytest.mark.parametrize(
    ("dtype", "path"),
    [
        (torch.bfloat16, "module_ncdhw"),
        (torch.bfloat16, "module_channels_last"),
        (torch.bfloat16, "function"),
        (torch.float16, "function"),
    ],
)
def test_outputs_and_gradients_equal_fp32_statistics_group_norm(dtype, path):
    gn = _module()
    layout = CL if path == "module_channels_last" else torch.contiguous_format
    x = _low_precision_input(dtype, layout)
    grad = _low_precision_input(dtype, layout, seed=2)
    if path == "function":
        run = lambda x: group_norm_low_precision(x, 8, gn.weight, gn.bias)  # noqa: E731
    else:

        def run(x):
            with torch.autocast("cpu", dtype=dtype):
                return gn(x)

    ours = _forward_backward(run, x, grad, [gn.weight, gn.bias])
    reference = _fp32_statistics_reference(gn, x, grad)
    assert ours[0].dtype == ours[1].dtype == dtype
    rounding = ROUNDING[dtype]
    for a, b in zip(ours[:2], reference[:2], strict=True):
        torch.testing.assert_close(a.float(), b, rtol=rounding, atol=rounding * 1e-3)
    for a, b in zip(ours[2:], reference[2:], strict=True):
        torch.testing.assert_close(a, b, **PARAM_GRAD_TOLERANCE)


def test_low_precision_function_without_affine_passes_gradcheck_in_float64():
    # The same code path, in float64, against numerical derivatives.
    x = torch.randn(2, 4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: group_norm_low_precision(a[0], 2, *a[1:]), (x, weight, bias)
    )
    assert torch.autograd.gradcheck(lambda x: group_norm_low_precision(x, 2), (x,))


def test_under_autocast_an_fp32_input_comes_back_in_the_autocast_dtype():
    gn = _module()
    x = _low_precision_input(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gn(x)
    assert y.dtype == torch.bfloat16
    outside = gn(x)  # without autocast nothing changes: float32 in, float32 out
    assert outside.dtype == torch.float32
    torch.testing.assert_close(y.float(), gn(x.bfloat16()).float(), rtol=0, atol=0)


def test_bad_group_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_groups=3.*shape \\(2, 64, 2, 12, 12\\)"):
        group_norm_low_precision(_low_precision_input(torch.bfloat16), 3)


def test_low_precision_function_gives_the_same_results_a_sample_at_a_time(monkeypatch):
    # Its float32 temporaries cover a chunk of samples, so that they do not grow with the batch.
    gn = _module()
    x, grad = _low_precision_input(torch.bfloat16), _low_precision_input(torch.bfloat16, seed=2)

    def run():
        return _forward_backward(
            lambda x: group_norm_low_precision(x, 8, gn.weight, gn.bias),
            x,
            grad,
            [gn.weight, gn.bias],
        )

    whole = run()
    monkeypatch.setattr(group_norm, "LOW_PRECISION_CHUNK_ELEMENTS", 1)
    assert len(group_norm._sample_chunks(x)) == SHAPE[0]
    for a, b in zip(run(), whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
