"""Conv3d that sidesteps a oneDNN bug in bfloat16 CPU weight gradients.

torch 2.14's oneDNN (v3.12) computes the bfloat16 convolution weight gradient on AVX-512 CPUs
with its ``jit_bf16:avx512_core_bf16`` backward-weights kernel, and that kernel is wrong for
small inputs: a 3x1x1 conv on a 2-frame input, a 1x3x3 stride-2 conv on a 1x1 input (res2 and
res5 of an I3D fed 8x16x16 clips). The gradient holds garbage up to 1e37 and NaN, sometimes
the heap is corrupted ("double free or corruption"); the forward and the input gradient are
right, float32 is right, and oneDNN's AVX2 kernels (``ONEDNN_MAX_CPU_ISA=AVX2``) are right.
Seen on an AMD EPYC with avx512_bf16 (Zen 4), and with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` (no
bf16 instructions); no shape rule covers every failing case, so the detour is taken for every
bfloat16 weight gradient wherever oneDNN runs its AVX-512 bf16 kernels.

:class:`Conv3d` keeps the forward and the input gradient in bfloat16 and computes the weight
gradient in float32 from the same bfloat16 values (the sum is then also more accurate);
everything else, GPUs included, runs the stock kernels. ``videogn-doctor`` runs the failing case
in a child process and reports whether this torch has the bug.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def _cpu_has_onednn_bf16_kernels() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cpu_bf16_conv_uses_avx512_kernels() -> bool:
    """True when oneDNN runs bfloat16 CPU convolutions with its AVX-512 kernels, the ones
    with the wrong weight gradient. Decided from the CPU, not by running the kernel: a run
    can corrupt the heap, so the live check (:func:`probe_cpu_bf16_conv_weight_grad`) is for
    a throwaway process such as ``videogn-doctor``'s. Only the hardware answer is cached:
    ``torch.backends.mkldnn.enabled`` can be switched at any time and is read each call."""
    return torch.backends.mkldnn.enabled and _cpu_has_onednn_bf16_kernels()


def probe_cpu_bf16_conv_weight_grad() -> bool:
    """Run the failing case: True when a bfloat16 ``F.conv3d`` on this CPU returns a wrong
    weight gradient for a 3x1x1 conv on a 2-frame input. Run it in a throwaway process."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the garbage comes from stale memory: look more than once
        # The same bfloat16 values in both runs: only the kernels differ.
        x = torch.randn(2, 16, 2, 2, 2, generator=generator).bfloat16()
        w = torch.randn(16, 16, 3, 1, 1, generator=generator).bfloat16()
        grad_out = torch.randn(2, 16, 2, 2, 2, generator=generator).bfloat16()
        grads = []
        for dtype in (torch.bfloat16, torch.float32):
            weight = w.to(dtype, copy=True).requires_grad_()
            F.conv3d(x.to(dtype), weight, padding=(1, 0, 0)).backward(grad_out.to(dtype))
            grads.append(weight.grad.float())
        error = (grads[0] - grads[1]).abs().nan_to_num(float("inf")).max()
        if error > 0.05 * grads[1].abs().max():
            return True
    return False


class _Bf16ConvFloat32WeightGrad(torch.autograd.Function):
    """bfloat16 conv3d whose weight (and bias) gradient is computed in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        x_bf16, weight_bf16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(x_bf16, weight_bf16)
        ctx.geometry = (stride, padding, dilation, False, (0, 0, 0), groups)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        bias_bf16 = None if bias is None else bias.to(torch.bfloat16)
        return F.conv3d(x_bf16, weight_bf16, bias_bf16, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x_bf16, weight_bf16 = ctx.saved_tensors
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_x = grad_weight = grad_bias = None
        if need_x:  # the bfloat16 input gradient is right: keep its speed
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x_bf16, weight_bf16, None, *ctx.geometry, (True, False, False)
            )[0].to(x_dtype)
        if need_weight or need_bias:
            bias_sizes = None if bias_dtype is None else [weight_bf16.shape[0]]
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_out.float(),
                x_bf16.float(),
                weight_bf16.float(),
                bias_sizes,
                *ctx.geometry,
                (False, need_weight, need_bias),
            )
            grad_weight = None if grad_weight is None else grad_weight.to(weight_dtype)
            grad_bias = None if grad_bias is None else grad_bias.to(bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _computes_in_bf16_on_cpu(x: torch.Tensor) -> bool:
    if x.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, state dict and isinstance) that takes the float32
    weight-gradient detour for bfloat16 on a CPU where oneDNN runs its AVX-512 kernels."""

    def _conv_forward(self, x, weight, bias):
        if (
            torch.is_grad_enabled()
            and weight.requires_grad
            and not isinstance(self.padding, str)
            and self.padding_mode == "zeros"
            and _computes_in_bf16_on_cpu(x)
            and cpu_bf16_conv_uses_avx512_kernels()
        ):
            return _Bf16ConvFloat32WeightGrad.apply(
                x, weight, bias, self.stride, self.padding, self.dilation, self.groups
            )
        return super()._conv_forward(x, weight, bias)
