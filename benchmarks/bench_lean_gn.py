"""The lean GroupNorm under autocast against today's GN step, CPU, like with like.

    python benchmarks/bench_lean_gn.py                 # toy I3D steps + one-layer table, 1 thread
    python benchmarks/bench_lean_gn.py --rounds 11 --only steps

"today": ``ChannelsLastGroupNorm`` as it was before the lean path (its forward without the
autocast branch: CPU autocast hands group_norm its bf16 input unchanged). "lean": the module
now. Both run in the same process, round-robin, from the same weights and clip; ratios are on
process CPU time (one thread). bf16 steps are ~10x slower than fp32 on a CPU without bf16
hardware, so fp32 and bf16 are each compared with themselves.

The layer table times one GN layer, fwd + bwd, at I3D shapes: torch's kernel on fp32 input;
what CUDA autocast does to nn.GroupNorm (upcast the bf16 input to fp32, normalize, fp32 out);
and :func:`group_norm_low_precision`, the plain-op path the lean module takes off the CPU.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
import torch.nn.functional as F
from bench_step import SIZES, StepConfig, build_step, time_round_robin
from torch import nn

from videogn.models.group_norm import ChannelsLastGroupNorm, group_norm_low_precision

CL = torch.channels_last_3d


class TodayGroupNorm(ChannelsLastGroupNorm):
    """The GN before the lean path: no autocast branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_in_input_dtype(x)


def step_rows(rounds: int) -> None:
    size = SIZES["toy"]
    classes = {"today": TodayGroupNorm, "lean": ChannelsLastGroupNorm}
    print(f"\n### toy I3D train step ({size.overrides}, clip {size.clip}), median of {rounds}\n")
    print("| dtype | layout | today ms | lean ms | lean / today |")
    print("| --- | --- | --- | --- | --- |")
    for bf16 in (False, True):
        for channels_last in (False, True):
            steps = {}
            for name, cls in classes.items():
                # Built with nn.GroupNorm (same seed, same weights), then given each forward.
                step, model, _ = build_step(size, StepConfig("gn/torch", channels_last, bf16))
                _swap_norms(model, cls)
                step()  # warm-up
                steps[name] = step
            times = time_round_robin(steps, rounds)
            today, lean = times["today"][0], times["lean"][0]
            print(
                f"| {'bf16' if bf16 else 'fp32'} | {'CL' if channels_last else 'NCDHW'} | "
                f"{today * 1e3:.0f} | {lean * 1e3:.0f} | {lean / today:.3f} |"
            )


def _swap_norms(model: nn.Module, cls: type) -> None:
    """Make every GroupNorm of ``model`` an instance of ``cls`` (same parameters)."""
    for module in model.modules():
        if isinstance(module, nn.GroupNorm):
            module.__class__ = cls


LAYER_SHAPES = [((2, 64, 8, 56, 56), 32), ((2, 256, 4, 28, 28), 32), ((2, 512, 4, 14, 14), 32)]


def layer_rows(rounds: int) -> None:
    print(f"\n### one GN layer, NCDHW, fwd + bwd, min of {rounds} interleaved, ms\n")
    print("| shape, G | fp32 torch | bf16 upcast (CUDA autocast) | bf16 low_precision | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for shape, groups in LAYER_SHAPES:
        gn = nn.GroupNorm(groups, shape[1])
        x32 = torch.randn(shape, requires_grad=True)
        x16 = x32.detach().bfloat16().requires_grad_()
        params = (gn.weight, gn.bias)
        layers = {
            "fp32": (partial(F.group_norm, x32, groups, *params), x32),
            "upcast": (lambda x=x16, g=groups, p=params: F.group_norm(x.float(), g, *p), x16),
            "lean": (partial(group_norm_low_precision, x16, groups, *params), x16),
        }
        best = dict.fromkeys(layers, float("inf"))
        for _ in range(rounds):
            for name, (run, x) in layers.items():
                start = time.process_time()
                y = run()
                torch.autograd.grad(y, (x, *params), torch.ones_like(y))
                best[name] = min(best[name], time.process_time() - start)
        print(
            f"| {shape}, {groups} | {best['fp32'] * 1e3:.1f} | {best['upcast'] * 1e3:.1f} | "
            f"{best['lean'] * 1e3:.1f} | lean / upcast {best['lean'] / best['upcast']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only", nargs="+", choices=("steps", "layers"), default=("steps", "layers")
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "steps" in args.only:
        step_rows(args.rounds)
    if "layers" in args.only:
        layer_rows(args.rounds)


if __name__ == "__main__":
    main()
