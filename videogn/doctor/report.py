"""The doctor's report as text (the terminal) and Markdown (tables for docs and $OUT)."""

from __future__ import annotations


def _yes(value) -> str:
    return "yes" if value else "no"


def environment_lines(env: dict) -> list[str]:
    t, cpu = env["torch"], env["cpu"]
    lines = [
        f"Python {env['python']} on {env['platform']}",
        f"torch {t['torch']}  CUDA build {t['cuda_build']}  "
        f"CUDA available {_yes(t['cuda_available'])}  cuDNN {t['cudnn']}  NCCL {t['nccl']}  "
        f"gloo {_yes(t['gloo'])}",
        f"TF32: matmul {_yes(t['tf32_matmul'])}, cuDNN conv {_yes(t['tf32_cudnn'])}; "
        f"cudnn.benchmark {_yes(t['cudnn_benchmark'])}",
        f"CPU: {cpu['model']} ({cpu['machine']}), {cpu['logical_cores']} logical cores, "
        f"torch threads {cpu['torch_threads']}, flags {' '.join(cpu['flags']) or '-'}, "
        f"torch kernels {cpu['torch_capability']}, oneDNN bf16 kernels "
        f"{_yes(cpu['onednn_bf16_kernels'])}",
        f"CPU bf16: {cpu['bf16_note']}",
        f"CPU bf16 conv weight gradient (oneDNN, probed in a child process): "
        f"{env['cpu_bf16_conv_weight_grad']}",
    ]
    if not env["gpus"]:
        lines.append("GPUs: none visible")
    for gpu in env["gpus"]:
        lines.append(
            f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, sm "
            f"{gpu['compute_capability']}, {gpu['multiprocessors']} SMs, bf16 {_yes(gpu['bf16'])}"
        )
    packages = ", ".join(f"{k} {v or 'MISSING'}" for k, v in env["packages"].items())
    lines.append(f"Packages: {packages}")
    ffmpeg = ", ".join(f"{k} {v}" for k, v in env["ffmpeg"].items()) or "PyAV missing"
    lines.append(f"PyAV's FFmpeg: {ffmpeg}")
    lines += [f"WARNING: {w}" for w in env["warnings"]] or ["No known-bad combination found."]
    return lines


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def steps_table(steps: list[dict]) -> list[str]:
    rows = [
        [
            s["norm"],
            s["clip"],
            s["batch"],
            s["dtype"],
            s["layout"],
            f"{s['step_s'] * 1e3:.1f}",
            f"{s['clips_per_s']:.1f}",
            "" if s["gn_over_bn"] is None else f"{s['gn_over_bn']:.2f}",
            f"{s['peak_mib']:.0f}",
            f"{s['planned_mib']:.0f}",
            f"{s['measured_over_planned']:.2f}",
        ]
        for s in steps
    ]
    header = ["norm", "clip", "bs", "dtype", "layout", "ms/step", "clips/s", "GN/BN"]
    return _table(header + ["peak MiB", "planned MiB", "peak/planned"], rows)


def loader_table(loader: dict) -> list[str]:
    rows = [
        [r["workers"], f"{r['clips_per_s']:.1f}", f"{r['per_worker']:.2f}", r.get("failures", 0)]
        for r in loader["rows"]
    ]
    lines = _table(["workers", "clips/s", "clips/s per worker", "failures"], rows)
    demand = loader.get("demand_clips_per_s")
    if demand:
        enough = loader.get("enough_at")
        lines.append("")
        lines.append(
            f"The fastest 32x2 bs8 step consumes {demand:.1f} clips/s: about "
            f"{loader['workers_needed']} worker(s) at the best per-worker rate; "
            + (f"{enough} worker(s) kept up here." if enough else "no count tried kept up here.")
        )
    return lines


def to_markdown(report: dict) -> str:
    lines = ["# videogn-doctor", "", "## Environment", ""]
    lines += [f"- {line}" for line in environment_lines(report["environment"])]
    if "data" in report:
        d = report["data"]
        lines += ["", "## Data check", "", f"- {d['decoded']}/{d['sampled']} decoded "]
        lines += [f"- failed: {path}: {reason}" for path, reason in d["failures"]]
    if "steps" in report:
        lines += [
            "",
            f"## Train steps ({report['bench']['device']}, {report['bench']['size']})",
            "",
        ]
        lines += steps_table(report["steps"])
    for probe in report.get("batch_probe", []):
        lines += ["", f"- batch probe {probe['norm']} {probe['dtype']}: {probe['describe']}"]
    if "loader" in report:
        lines += ["", "## DataLoader (generated 256-px videos, 32x2 clips, 224 crops)", ""]
        lines += loader_table(report["loader"])
    return "\n".join(lines) + "\n"
