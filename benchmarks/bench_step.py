"""CPU train step of the I3D: fp32 vs bf16 autocast, NCDHW vs channels_last_3d, BN vs GN.

    python benchmarks/bench_step.py                       # all sections, 1 thread
    python benchmarks/bench_step.py --only toy layers --threads 2

A step is forward + cross-entropy + backward + SGD step (momentum 0.9) + zero_grad. All the
configurations of one model size start from the same weights and clip and are timed
round-robin, one step of each per round, so load from other processes hits them alike. The
tables give medians; ratios are taken on the process CPU time (``time.process_time``; with
one thread it is the step time minus the time spent waiting for a core on a shared machine),
or on wall time with several threads. "gn" is ``get_norm_layer("gn")`` (ChannelsLastGroupNorm),
"gn/torch" is plain ``nn.GroupNorm``.

Peak memory: :func:`videogn.memory.measure.measure_cpu_step`, the CPU allocator's peak over
forward + backward above the model state (torch.profiler memory events), next to the planner's
estimate of the same step (:func:`videogn.memory.estimate.simulate_step`, meta tensors).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from videogn.memory.estimate import build_meta_model, simulate_step
from videogn.memory.measure import measure_cpu_step
from videogn.models import create_model
from videogn.models.group_norm import group_norm_channels_last

MIB = 2**20
NUM_CLASSES = 400
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class ModelSize:
    overrides: dict
    num_groups: int  # 32 at full width; scaled with the width so that C/G matches
    clip: tuple[int, ...]  # N, C, T, H, W
    rounds: int


SIZES = {
    "toy": ModelSize(dict(base_width=16, stage_depths=(1, 1, 1, 1)), 8, (2, 3, 8, 64, 64), 21),
    "full": ModelSize({}, 32, (1, 3, 16, 112, 112), 7),
}


@dataclass(frozen=True)
class StepConfig:
    norm: str  # "bn", "gn" (videogn's), "gn/torch" (nn.GroupNorm)
    channels_last: bool
    bf16: bool

    @property
    def name(self) -> str:
        layout = "CL" if self.channels_last else "NCDHW"
        return f"{self.norm:8s} {'bf16' if self.bf16 else 'fp32'} {layout}"


def all_configs(bf16_layouts: tuple[bool, ...]) -> list[StepConfig]:
    configs = []
    for bf16, layouts in ((False, (False, True)), (True, bf16_layouts)):
        for channels_last in layouts:
            for norm in ("bn", "gn", "gn/torch") if channels_last else ("bn", "gn"):
                configs.append(StepConfig(norm, channels_last, bf16))
    return configs


def model_kwargs(size: ModelSize, norm: str) -> dict:
    if norm == "gn/torch":
        norm_arg, norm_kwargs = partial(nn.GroupNorm, size.num_groups), None
    else:
        norm_arg, norm_kwargs = norm, {"num_groups": size.num_groups} if norm == "gn" else None
    return dict(
        name="i3d_r50",
        norm=norm_arg,
        norm_kwargs=norm_kwargs,
        num_classes=NUM_CLASSES,
        **size.overrides,
    )


def build_step(size: ModelSize, config: StepConfig, dropout: float = 0.5, lr: float = 0.01):
    """-> (step() -> loss, model, clip): the train step of ``config``, from seed 0."""
    torch.manual_seed(0)
    model = create_model(**model_kwargs(size, config.norm), dropout=dropout).train()
    clip = torch.randn(size.clip)
    labels = torch.randint(0, NUM_CLASSES, size.clip[:1])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    # A zero momentum buffer gives SGD's first step exactly; it is made now, not in a timed step.
    for p in model.parameters():
        optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)

    def step(inputs=clip, targets=labels) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step, model, clip


def time_round_robin(steps: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """Name -> (median CPU seconds, median wall seconds) over ``rounds`` interleaved steps."""
    cpu = {name: [] for name in steps}
    wall = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            step()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {n: (statistics.median(cpu[n]), statistics.median(wall[n])) for n in steps}


def forward_gflops(size: ModelSize) -> float:
    with torch.device("meta"):
        model = create_model(**model_kwargs(size, "bn"))
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(size.clip))
    return counter.get_total_flops() / 1e9


def memory_mib(size: ModelSize, config: StepConfig, model: nn.Module, clip) -> tuple[float, float]:
    """(measured peak, planner's peak) of forward + backward, MiB above the model state."""
    dtype = "bf16" if config.bf16 else "fp32"
    measured = measure_cpu_step(model, clip, backward=True, dtype=dtype).peak_bytes
    meta_model = build_meta_model(model_kwargs(size, config.norm))
    planned = simulate_step(
        meta_model,
        size.clip[0],
        size.clip[1:],
        dtype=dtype,
        channels_last=config.channels_last,
        autocast_policy="cpu",
    ).peak_bytes
    return measured / MIB, planned / MIB


def step_table(size_name: str, bf16_layouts: tuple[bool, ...], rounds: int, use_wall: bool):
    size = SIZES[size_name]
    configs = all_configs(bf16_layouts)
    steps, memory = {}, {}
    for config in configs:
        step, model, clip = build_step(size, config)
        memory[config] = memory_mib(size, config, model, clip)  # also the warm-up step
        steps[config] = step
    times = time_round_robin(steps, rounds)
    gflop = 3 * forward_gflops(size)  # backward ~ 2x forward
    key = 1 if use_wall else 0
    print(
        f"\n### {size_name}: {size.overrides or 'I3D-R50'}, G={size.num_groups}, "
        f"clip {'x'.join(map(str, size.clip))}, median of {rounds} interleaved steps\n"
    )
    print(
        "| config | CPU ms | wall ms | speedup vs fp32 NCDHW | GN / BN | GFLOP/s | "
        "peak MiB (measured / planner) |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in configs:
        base = times[StepConfig("bn" if c.norm == "bn" else "gn", False, False)][key]
        bn = times.get(StepConfig("bn", c.channels_last, c.bf16))
        gn_vs_bn = f"{times[c][key] / bn[key]:.2f}" if c.norm != "bn" and bn else ""
        measured, planned = memory[c]
        print(
            f"| {c.name} | {times[c][0] * 1e3:.0f} | {times[c][1] * 1e3:.0f} | "
            f"{base / times[c][key]:.2f} | {gn_vs_bn} | {gflop / times[c][0]:.1f} | "
            f"{measured:.0f} / {planned:.0f} |"
        )


def loss_curves(size: ModelSize, iters: int) -> dict[StepConfig, list[float]]:
    """Losses of ``iters`` steps on two alternating batches of a learnable synthetic task."""
    n = size.clip[0]
    gen = torch.Generator().manual_seed(1)
    templates = torch.randn(4, *size.clip[1:], generator=gen)
    labels = torch.arange(2 * n) % 4
    clips = 0.5 * templates[labels] + torch.randn(2 * n, *size.clip[1:], generator=gen)
    curves = {}
    for config in all_configs((False, True)):
        if config.norm == "gn/torch":
            continue
        step, _, _ = build_step(size, config, dropout=0.0, lr=0.005)
        inputs = clips
        if config.channels_last:
            inputs = clips.contiguous(memory_format=torch.channels_last_3d)
        batches = [(inputs[i * n : (i + 1) * n], labels[i * n : (i + 1) * n]) for i in (0, 1)]
        curves[config] = [step(*batches[i % 2]) for i in range(iters)]
    return curves


def loss_table(iters: int, abs_tol: float, rel_tol: float) -> None:
    size = SIZES["toy"]
    curves = loss_curves(size, iters)
    print(
        f"\n### loss over {iters} toy iterations (clips {'x'.join(map(str, size.clip))}, SGD lr "
        f"0.005, two alternating batches) vs fp32 NCDHW, same norm; tolerance at every "
        f"iteration: |d| <= {abs_tol} + {rel_tol} * loss\n"
    )
    print("| config | loss at 1 / 10 / 25 / 50 | max abs diff | within tolerance |")
    print("|---|---|---|---|")
    for config, losses in curves.items():
        ref = curves[StepConfig(config.norm, False, False)]
        diffs = [abs(a - b) for a, b in zip(losses, ref, strict=True)]
        ok = all(d <= abs_tol + rel_tol * r for d, r in zip(diffs, ref, strict=True))
        marks = " / ".join(f"{losses[i]:.3f}" for i in (0, 9, 24, iters - 1))
        print(f"| {config.name} | {marks} | {max(diffs):.4f} | {'yes' if ok else 'NO'} |")


LAYER_SHAPES = [  # (N, C, T, H, W), G: the I3D-R50's norm inputs at 8-16 x 112 and 32 x 224
    ((1, 64, 16, 56, 56), 32),
    ((2, 64, 4, 56, 56), 32),
    ((2, 64, 2, 28, 28), 32),
    ((2, 128, 2, 28, 28), 32),
    ((2, 256, 2, 28, 28), 32),
    ((2, 512, 1, 14, 14), 32),
]


def layer_table(rounds: int = 25) -> None:
    """fwd + bwd of one norm layer on a channels-last input: torch's GN and ours against BN."""
    print(f"\n### one norm layer, channels_last_3d, fwd + bwd, min of {rounds} interleaved\n")
    print("| dtype | shape, G | C/G | BN ms | GN/torch / BN | GN/ours / BN | ours / torch |")
    print("|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for shape, groups in LAYER_SHAPES:
            x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last_3d)
            x.requires_grad_()
            grad = torch.randn_like(x)
            bn, gn = nn.BatchNorm3d(shape[1]), nn.GroupNorm(groups, shape[1])
            layers = {  # name -> (function, its parameters)
                "bn": (bn, bn.weight, bn.bias),
                "torch": (gn, gn.weight, gn.bias),
                "ours": (
                    partial(
                        group_norm_channels_last, num_groups=groups, weight=gn.weight, bias=gn.bias
                    ),
                    gn.weight,
                    gn.bias,
                ),
            }
            best = {name: float("inf") for name in layers}
            for _ in range(rounds):
                for name, (layer, weight, bias) in layers.items():
                    start = time.process_time()
                    torch.autograd.grad(layer(x), (x, weight, bias), grad)
                    best[name] = min(best[name], time.process_time() - start)
            print(
                f"| {str(dtype)[6:]} | {shape}, {groups} | {shape[1] // groups} | "
                f"{best['bn'] * 1e3:.2f} | {best['torch'] / best['bn']:.2f} | "
                f"{best['ours'] / best['bn']:.2f} | {best['ours'] / best['torch']:.2f} |"
            )


def describe_machine(threads: int) -> None:
    flags = set()
    model_name = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":")[1].split())
            elif line.startswith("model name"):
                model_name = line.split(":")[1].strip()
    present = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    a = torch.randn(1024, 1024)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = a.to(dtype)
        best = min(_seconds(lambda m=m: m @ m) for _ in range(3))
        rates[dtype] = 2 * 1024**3 / best / 1e9
    print(f"CPU: {model_name}; {present}")
    print(
        f"torch {torch.__version__}, oneDNN bf16 kernels: "
        f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}, threads {threads}"
    )
    print(
        f"1024^3 matmul: fp32 {rates[torch.float32]:.0f} GFLOP/s, "
        f"bf16 {rates[torch.bfloat16]:.1f} GFLOP/s"
    )


def _seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("toy", "full", "loss", "layers"),
        default=("toy", "full", "loss", "layers"),
    )
    parser.add_argument("--toy-rounds", type=int, default=SIZES["toy"].rounds)
    parser.add_argument("--full-rounds", type=int, default=SIZES["full"].rounds)
    parser.add_argument("--loss-iters", type=int, default=50)
    parser.add_argument("--no-bf16", action="store_true", help="time fp32 steps only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    describe_machine(args.threads)
    use_wall = args.threads > 1
    print(f"ratios on {'wall' if use_wall else 'CPU'} time")
    if "toy" in args.only:
        step_table("toy", () if args.no_bf16 else (False, True), args.toy_rounds, use_wall)
    if "full" in args.only:
        # bf16 steps take ~10x fp32 ones without bf16 hardware: channels-last only at full width.
        step_table("full", () if args.no_bf16 else (True,), args.full_rounds, use_wall)
    if "loss" in args.only:
        loss_table(args.loss_iters, abs_tol=0.05, rel_tol=0.1)
    if "layers" in args.only:
        layer_table()


if __name__ == "__main__":
    main()
