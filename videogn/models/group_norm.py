"""videogn's GroupNorm: lean under autocast, fast and stable for channels-last video on CPU.

Under autocast (CPU or CUDA), :class:`ChannelsLastGroupNorm` takes and returns the autocast
dtype, accumulates its statistics in float32 and keeps for backward only the low-precision
input and the float32 per-group mean and rstd. CUDA autocast would instead run group_norm in
float32 (it is on autocast's fp32 list), keeping an fp32 copy of every GN input: twice BN's
activation memory under bf16. On CPU, torch's kernel already accepts a bf16 input with float32
affine and statistics; elsewhere :func:`group_norm_low_precision` does the same with plain ops.

Channels-last on CPU: torch's CPU GroupNorm keeps ``channels_last_3d`` inputs in that layout
(no contiguous copy), but two things go wrong there:

- speed: its channels-last backward is 2-3x BatchNorm's in float32 when groups hold 2
  channels (the 64-channel layers of an I3D with 32 groups), and 5-10x in bfloat16 up to 8
  channels per group;
- accuracy: its channels-last forward takes the variance as E[x^2] - E[x]^2 in float32, which
  is off by ~5% once |mean| is 100x the std, and meaningless at 1000x (NCDHW is fine).

:func:`group_norm_channels_last` works on the [N, L, G, C/G] view of the channels-last memory
(L = T*H*W): sums over L read long contiguous rows of C values; the variance is taken around
the mean (a second pass) in float32 or wider; the hand-written backward needs two reductions
over L and two fused multiply-adds. :class:`ChannelsLastGroupNorm` uses it where it was measured
faster (``CUSTOM_KERNEL_RANGE``, see docs/BENCHMARKS.md) and torch's kernel everywhere else:
other layouts, other devices, groups of many channels, small tensors.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from videogn.models.autocast import active_autocast_dtype, autocast_suspended


def _group_rows(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[N, C, *spatial] -> [N, L, G, C/G] with L = prod(spatial); a view when x is channels-last."""
    n, channels = x.shape[:2]
    return x.movedim(1, -1).reshape(n, -1, num_groups, channels // num_groups)


def _empty_channels_last(like: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A new channels-last tensor shaped like ``like`` and its [N, L, G, C/G] view.

    Results are written through the view (``out=``) so that what a Function returns is not a
    view: autograd forbids in-place ops (the next ReLU) on views made inside a Function.
    """
    n, channels, *spatial = like.shape
    strides = [channels]
    for size in reversed(spatial[1:]):
        strides.insert(0, strides[0] * size)
    strides = [strides[0] * spatial[0], 1, *strides]
    result = torch.empty_strided(like.shape, strides, dtype=like.dtype, device=like.device)
    return result, result.movedim(1, -1).view(n, -1, num_groups, channels // num_groups)


def _per_channel(per_group: torch.Tensor, channels_per_group: int) -> torch.Tensor:
    """[N, 1, G, 1] -> [N, 1, G, C/G], materialized: broadcasting only over L keeps the
    elementwise loops long and vectorized (a size-C/G inner loop is not)."""
    n, _, groups, _ = per_group.shape
    return per_group.expand(n, 1, groups, channels_per_group).contiguous()


class _GroupNormChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups: int, eps: float):
        # Statistics in float32 at least (float64 stays float64); no copy for a float32 input.
        acc_dtype = torch.promote_types(x.dtype, torch.float32)
        low_precision = x.dtype != acc_dtype
        rows = _group_rows(x, num_groups).to(acc_dtype)
        group_size = rows.shape[3]
        count = rows.shape[1] * group_size
        # Reduce over L first (long, contiguous rows of C), then over the C/G channels.
        mean = rows.sum(1, keepdim=True).sum(3, keepdim=True) / count
        mean_per_channel = _per_channel(mean, group_size)
        # A low-precision input was copied to float32 above: centre the copy in place.
        centered = rows.sub_(mean_per_channel) if low_precision else rows - mean_per_channel
        result, result_rows = _empty_channels_last(x, num_groups)
        # One buffer holds the squares, then the output: big allocations cost page faults.
        out = torch.empty_like(centered) if low_precision else result_rows
        # Variance around the mean (second pass): E[x^2] - E[x]^2 cancels when |mean| >> std.
        sum_sq = torch.mul(centered, centered, out=out).sum(1, keepdim=True)
        rstd = torch.rsqrt(sum_sq.sum(3, keepdim=True) / count + eps)
        scale = _per_channel(rstd, group_size)
        if weight is not None:
            scale = scale * weight.view(1, 1, num_groups, group_size).to(acc_dtype)
        if bias is None:
            torch.mul(centered, scale, out=out)
        else:
            shift = bias.view(1, 1, num_groups, group_size).to(acc_dtype)
            torch.addcmul(shift, centered, scale, out=out)
        if out is not result_rows:
            result_rows.copy_(out)
        # Saving x - mean instead of x takes the same memory (x dies with the layer) and saves a
        # pass in backward; a low-precision x is saved as is, as rounding x - mean would lose
        # digits that torch's kernel keeps.
        ctx.save_for_backward(x if low_precision else centered, mean, rstd, weight)
        ctx.num_groups, ctx.low_precision = num_groups, low_precision
        ctx.bias_dtype = None if bias is None else bias.dtype
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        centered, mean, rstd, weight = ctx.saved_tensors
        num_groups = ctx.num_groups
        if ctx.low_precision:  # centered is x: subtracting the float32 mean promotes it
            group_size = centered.shape[1] // num_groups
            centered = _group_rows(centered, num_groups) - _per_channel(mean, group_size)
        group_size = centered.shape[3]
        count = centered.shape[1] * group_size
        acc_dtype = rstd.dtype
        dy = _group_rows(grad_out, num_groups).to(acc_dtype)
        grad_x, grad_x_rows = _empty_channels_last(grad_out, num_groups)
        out = grad_x_rows if grad_out.dtype == acc_dtype else torch.empty_like(dy)
        # Per-channel sums of dy and dy * (x - mean); everything below is [N, 1, G, C/G].
        sum_dy = dy.sum(1, keepdim=True)
        sum_dy_centered = torch.mul(dy, centered, out=out).sum(1, keepdim=True)
        gamma = 1.0 if weight is None else weight.view(1, 1, num_groups, -1).to(acc_dtype)
        # dx = rstd * (g*dy - mean_G(g*dy) - xhat * mean_G(g*dy*xhat)), xhat = (x - mean) * rstd,
        # written as dx = a*dy + b*(x - mean) + c, a per channel and b, c per group.
        a = _per_channel(rstd, group_size) * gamma
        b = (sum_dy_centered * gamma).sum(3, keepdim=True) * (-(rstd**3) / count)
        c = (sum_dy * gamma).sum(3, keepdim=True) * (-rstd / count)
        torch.addcmul(_per_channel(c, group_size), centered, _per_channel(b, group_size), out=out)
        out.addcmul_(dy, a)
        if out is not grad_x_rows:
            grad_x_rows.copy_(out)
        grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (sum_dy_centered * rstd).sum(0).flatten().to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = sum_dy.sum(0).flatten().to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None


# Samples per chunk of the low-precision GN: its float32 temporaries cover at most this many
# elements (or one sample), so they do not grow with the batch.
LOW_PRECISION_CHUNK_ELEMENTS = 2**22


def _sample_chunks(x: torch.Tensor) -> list[slice]:
    per_sample = max(1, x[0].numel())
    step = max(1, LOW_PRECISION_CHUNK_ELEMENTS // per_sample)
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


class _GroupNormLowPrecision(torch.autograd.Function):
    """GroupNorm of a low-precision x with float32 statistics, any device; NCDHW in and out.

    Saves x (low precision) and float32 mean/rstd [N, G]: the same as torch's kernel saves for
    a float32 x. Float32 temporaries live only inside forward and backward, a chunk of samples
    at a time.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups: int, eps: float):
        acc_dtype = torch.promote_types(x.dtype, torch.float32)
        x = x.contiguous()  # NCDHW, so that [N, G, C/G * L] is a view
        channels = x.shape[1]
        out = torch.empty_like(x)
        means, rstds = [], []
        for chunk in _sample_chunks(x):
            n = x[chunk].shape[0]
            normalized = x[chunk].view(n, num_groups, -1).to(acc_dtype, copy=True)
            var, mean = torch.var_mean(normalized, dim=2, correction=0)
            rstd = torch.rsqrt(var + eps)
            normalized.sub_(mean.unsqueeze(2)).mul_(rstd.unsqueeze(2))
            per_channel = normalized.view(n, channels, -1)
            if weight is not None:
                per_channel.mul_(weight.to(acc_dtype).view(1, channels, 1))
            if bias is not None:
                per_channel.add_(bias.to(acc_dtype).view(1, channels, 1))
            out[chunk].copy_(per_channel.view(out[chunk].shape))
            means.append(mean)
            rstds.append(rstd)
        mean, rstd = torch.cat(means), torch.cat(rstds)
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.num_groups = num_groups
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, mean, rstd, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(grad_out)
        gamma = None if weight is None else weight.to(rstd.dtype)
        sums = [
            _low_precision_backward_chunk(
                x[c], grad_out[c], mean[c], rstd[c], gamma, ctx.num_groups, out=grad_x[c]
            )
            for c in _sample_chunks(x)
        ]
        grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum(s[1].sum(0) for s in sums).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = sum(s[0].sum(0) for s in sums).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None


def _low_precision_backward_chunk(x, grad_out, mean, rstd, gamma, groups: int, *, out):
    """Write dx of a chunk of samples into ``out``; return its per-channel sums of dy and of
    dy * x_hat ([n, C] each) for the parameter gradients."""
    n, channels = x.shape[:2]
    # x_hat = (x - mean) * rstd, recomputed from the low-precision x and float32 statistics.
    x_hat = x.view(n, groups, -1).to(rstd.dtype, copy=True)
    x_hat.sub_(mean.unsqueeze(2)).mul_(rstd.unsqueeze(2))
    dy = grad_out.view(n, channels, -1).to(rstd.dtype, copy=True)
    sum_dy = dy.sum(2)
    sum_dy_x_hat = torch.einsum("ncl,ncl->nc", dy, x_hat.view(n, channels, -1))
    sum_g, sum_g_x_hat = sum_dy, sum_dy_x_hat
    if gamma is not None:
        dy.mul_(gamma.view(1, channels, 1))
        sum_g, sum_g_x_hat = sum_dy * gamma, sum_dy_x_hat * gamma
    # dx = rstd * (g - mean_G(g) - x_hat * mean_G(g * x_hat)), g = gamma * dy.
    count = x_hat.shape[2]
    mean_g = sum_g.view(n, groups, -1).sum(2, keepdim=True) / count
    mean_g_x_hat = sum_g_x_hat.view(n, groups, -1).sum(2, keepdim=True) / count
    grad_x = dy.view(n, groups, -1).sub_(mean_g).sub_(x_hat.mul_(mean_g_x_hat))
    out.copy_(grad_x.mul_(rstd.unsqueeze(2)).view(out.shape))
    return sum_dy, sum_dy_x_hat


def group_norm_low_precision(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``F.group_norm`` of a bf16/fp16 ``x`` with float32 statistics, saving x and [N, G] stats.

    Device-agnostic (plain tensor ops); the output has the dtype of ``x`` and NCDHW layout;
    ``weight``/``bias`` stay in their own dtype (float32 master weights under autocast).
    """
    if x.dim() < 3 or x.shape[1] % num_groups:
        raise ValueError(
            f"group_norm_low_precision: expected [N, C, *spatial] with C divisible by "
            f"num_groups={num_groups}, got shape {tuple(x.shape)}"
        )
    return _GroupNormLowPrecision.apply(x, weight, bias, num_groups, eps)


def is_channels_last_only(x: torch.Tensor) -> bool:
    """True when ``x`` [N, C, *spatial] is channels-last in memory and not also NC-contiguous."""
    return x.dim() >= 3 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


def group_norm_channels_last(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``F.group_norm`` computed on the channels-last view; statistics in float32.

    Args:
        x: [N, C, *spatial], any layout (a non-channels-last input is copied first).
        num_groups: G, dividing C.
        weight, bias: per-channel affine [C] or None; kept in their own dtype (float32 under
            autocast) while the output has the dtype of ``x``, as ``nn.GroupNorm`` does.
        eps: added to the variance.

    Returns:
        the normalized tensor, channels-last, dtype of ``x``.
    """
    if x.dim() < 3 or x.shape[1] % num_groups:
        raise ValueError(
            f"group_norm_channels_last: expected [N, C, *spatial] with C divisible by "
            f"num_groups={num_groups}, got shape {tuple(x.shape)}"
        )
    return _GroupNormChannelsLast.apply(x, weight, bias, num_groups, eps)


# Where group_norm_channels_last beat torch's channels-last kernel (fwd + bwd, one thread, I3D
# layer shapes: benchmarks/bench_step.py --only layers), per input dtype: (most channels per
# group, fewest elements). On smaller tensors its extra Python-level ops cost more than they save.
CUSTOM_KERNEL_RANGE = {
    torch.float32: (2, 2**18),
    torch.bfloat16: (8, 2**15),
    torch.float16: (8, 2**15),
}


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same arguments, parameters and state-dict keys), lean under autocast.

    Under autocast the input is cast to the autocast dtype (a no-op after a conv) and normalized
    without autocast's float32 upcast: statistics in float32, output in the autocast dtype, and
    only the input and per-group float32 mean/rstd saved. CPU tensors take the kernels below;
    other devices :func:`group_norm_low_precision`.

    Outside autocast: channels-last CPU inputs in ``CUSTOM_KERNEL_RANGE`` go to
    :func:`group_norm_channels_last`; everything else (NCDHW inputs, other devices, wide
    groups, small tensors) runs ``nn.GroupNorm``'s kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_dtype = active_autocast_dtype(x) if x.is_floating_point() else None
        if low_dtype is None:
            return self._forward_in_input_dtype(x)
        x = x.to(low_dtype)
        with autocast_suspended(x):
            if x.device.type == "cpu":
                # torch's CPU kernel and ours both take bf16/fp16 x with float32 affine,
                # accumulate in float32 and save only x plus float32 mean/rstd.
                return self._forward_in_input_dtype(x)
            return group_norm_low_precision(x, self.num_groups, self.weight, self.bias, self.eps)

    def _forward_in_input_dtype(self, x: torch.Tensor) -> torch.Tensor:
        max_channels_per_group, min_numel = CUSTOM_KERNEL_RANGE.get(
            x.dtype, CUSTOM_KERNEL_RANGE[torch.float32]
        )
        if (
            x.device.type == "cpu"
            and self.num_channels // self.num_groups <= max_channels_per_group
            and x.numel() >= min_numel
            and is_channels_last_only(x)
        ):
            return group_norm_channels_last(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)
