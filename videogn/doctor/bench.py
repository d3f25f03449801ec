"""The Table 8 cells as train steps on this device: time, clips/s, GN/BN, memory vs the planner.

Each cell (BN/GN x 32x2 bs8, 32x2 bs4, 64x1 bs4) runs in fp32 and bf16 autocast, NCDHW and
channels_last_3d: a step is forward + cross-entropy + backward + SGD (momentum) + zero_grad on
random clips. The step's peak memory above the model state is measured (CUDA: the caching
allocator's peak; CPU: :func:`videogn.memory.measure.measure_cpu_step`) next to the planner's
estimate of the same step (:func:`videogn.memory.estimate.simulate_step`). On CUDA the batch
probe (:func:`videogn.memory.probe.probe_batch`) checks the planner's largest batch.

``quick`` is a toy I3D (width 8, one block per stage) on 4x shorter, 64-px clips, sized for
a 2-core CPU; the full size is the paper's I3D-R50 at 224 px.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from videogn.memory.estimate import autocast_dtype, build_meta_model, simulate_step
from videogn.memory.measure import measure_cpu_step
from videogn.models import create_model
from videogn.sweep.cells import TABLE8

MIB = 2**20
NUM_CLASSES = 400


@dataclass(frozen=True)
class BenchSize:
    overrides: dict
    num_groups: int  # 32 at full width; the toy keeps channels per group comparable
    frame_divisor: int  # clip length = the cell's frames / this
    crop_size: int
    warmup_steps: int
    timed_steps: int


FULL = BenchSize({}, 32, 1, 224, warmup_steps=2, timed_steps=5)
QUICK = BenchSize(dict(base_width=8, stage_depths=(1, 1, 1, 1)), 4, 4, 64, 2, 5)


@dataclass
class StepResult:
    norm: str
    clip: str
    batch: int
    dtype: str
    layout: str
    step_s: float
    clips_per_s: float
    peak_mib: float
    planned_mib: float
    gn_over_bn: float | None = None

    @property
    def memory_ratio(self) -> float:
        return self.peak_mib / self.planned_mib if self.planned_mib else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "measured_over_planned": round(self.memory_ratio, 3)}


def model_kwargs(size: BenchSize, norm: str) -> dict:
    norm_kwargs = {"num_groups": size.num_groups} if norm == "gn" else None
    return dict(
        name="i3d_r50",
        norm=norm,
        norm_kwargs=norm_kwargs,
        num_classes=NUM_CLASSES,
        **size.overrides,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_step(size, norm, clip_shape, device, *, dtype: str, channels_last: bool):
    """-> (step() -> None, model, clip) for one configuration, from seed 0."""
    torch.manual_seed(0)
    model = create_model(**model_kwargs(size, norm)).to(device).train()
    clip = torch.randn(clip_shape, device=device)
    labels = torch.randint(0, NUM_CLASSES, clip_shape[:1], device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    low_dtype = autocast_dtype(dtype)

    def step() -> None:
        with torch.autocast(
            device.type, dtype=low_dtype or torch.bfloat16, enabled=bool(low_dtype)
        ):
            loss = F.cross_entropy(model(clip), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, model, clip


def time_step(step: Callable[[], None], device: torch.device, size: BenchSize) -> float:
    """Median seconds per step after the warm-up steps (cuDNN autotuning, allocator growth)."""
    for _ in range(size.warmup_steps):
        step()
    _synchronize(device)
    times = []
    for _ in range(size.timed_steps):
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measured_peak_bytes(step, model, clip, device, dtype: str) -> int:
    """Peak bytes of one step above what was allocated before it (model state, clip)."""
    if device.type == "cuda":
        _synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return measure_cpu_step(model, clip, backward=True, dtype=dtype).peak_bytes


def planned_peak_bytes(size, norm, clip_shape, device, *, dtype, channels_last) -> int:
    meta_model = build_meta_model(model_kwargs(size, norm))
    return simulate_step(
        meta_model,
        clip_shape[0],
        clip_shape[1:],
        dtype=dtype,
        channels_last=channels_last,
        autocast_policy=device.type,
    ).peak_bytes


def bench_config(size, cell, device, dtype: str, channels_last: bool) -> StepResult:
    clip_shape = (
        cell.batch,
        3,
        cell.num_frames // size.frame_divisor,
        size.crop_size,
        size.crop_size,
    )
    step, model, clip = build_step(
        size, cell.norm, clip_shape, device, dtype=dtype, channels_last=channels_last
    )
    seconds = time_step(step, device, size)
    peak = measured_peak_bytes(step, model, clip, device, dtype)
    planned = planned_peak_bytes(
        size, cell.norm, clip_shape, device, dtype=dtype, channels_last=channels_last
    )
    del step, model, clip
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return StepResult(
        norm=cell.norm,
        clip=f"{clip_shape[2]}x{cell.frame_interval}",
        batch=cell.batch,
        dtype=dtype,
        layout="channels_last_3d" if channels_last else "ncdhw",
        step_s=seconds,
        clips_per_s=cell.batch / seconds,
        peak_mib=peak / MIB,
        planned_mib=planned / MIB,
    )


def add_gn_over_bn(results: list[StepResult]) -> None:
    """Fill each GN row's step time over the BN row of the same clip, batch, dtype, layout."""
    bn = {(r.clip, r.batch, r.dtype, r.layout): r.step_s for r in results if r.norm == "bn"}
    for r in results:
        if r.norm == "gn" and (r.clip, r.batch, r.dtype, r.layout) in bn:
            r.gn_over_bn = r.step_s / bn[(r.clip, r.batch, r.dtype, r.layout)]


def bench_cells(device: torch.device, size: BenchSize, log=print) -> list[StepResult]:
    """Every Table 8 cell x {fp32, bf16} x {NCDHW, channels_last_3d}."""
    results = []
    for cell in TABLE8:
        for dtype in ("fp32", "bf16"):
            for channels_last in (False, True):
                result = bench_config(size, cell, device, dtype, channels_last)
                log(
                    f"  {result.norm} {result.clip} bs{result.batch} {dtype} {result.layout}: "
                    f"{result.step_s * 1e3:.0f} ms/step, {result.clips_per_s:.1f} clips/s, "
                    f"peak {result.peak_mib:.0f} MiB (planned {result.planned_mib:.0f})"
                )
                results.append(result)
    add_gn_over_bn(results)
    return results


def cuda_batch_probe(size: BenchSize, norm: str, num_frames: int, dtype: str) -> dict:
    """The planner's largest batch for this GPU, checked by real steps (CUDA only)."""
    from videogn.memory.plan import plan_batch
    from videogn.memory.probe import probe_batch

    kwargs = model_kwargs(size, norm)
    plan = plan_batch(kwargs, num_frames, size.crop_size, dtype=dtype)
    model = create_model(**kwargs).cuda().train()
    result = probe_batch(model, plan, num_frames, size.crop_size, dtype=dtype)
    batch = result.batch_size
    peak = result.peak_bytes.get(batch)
    planned = plan.fixed_bytes + batch * plan.bytes_per_clip  # without the allocator margin
    slope = result.bytes_per_clip()
    del model
    torch.cuda.empty_cache()
    return {
        "norm": norm,
        "clip_frames": num_frames,
        "dtype": dtype,
        "planned_batch": result.planned_batch,
        "probed_batch": batch,
        "failed_batches": list(result.failed),
        "peak_gib": None if peak is None else round(peak / 2**30, 2),
        "planned_gib": round(planned / 2**30, 2),
        "measured_over_planned": None if peak is None else round(peak / planned, 3),
        "per_clip_measured_over_planned": None
        if slope is None
        else round(slope / plan.bytes_per_clip, 3),
        "describe": result.describe(),
    }
