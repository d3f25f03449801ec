"""What this machine runs videogn with, and the combinations known to go wrong.

In the spirit of ``torch.utils.collect_env`` and detectron2's ``collect_env``: versions of the
stack (Python, torch with CUDA/cuDNN/NCCL, PyAV with its FFmpeg libraries, decord, hydra,
omegaconf, submitit), each GPU, bf16 support on the CPU and the GPUs, TF32 settings.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch

# /proc/cpuinfo flags that give bf16 arithmetic in hardware (AVX512-BF16, AMX)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
PACKAGES = ("av", "decord", "hydra-core", "omegaconf", "submitit", "hydra-submitit-launcher")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_report() -> dict:
    """CPU model, flags that matter, torch's kernel capability and whether bf16 is hardware."""
    flags = cpu_flags()
    hardware_bf16 = any(f in flags for f in CPU_BF16_FLAGS)
    return {
        "model": cpu_model(),
        "machine": platform.machine(),
        "logical_cores": torch.multiprocessing.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "flags": [f for f in CPU_FLAGS_SHOWN if f in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16_kernels": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "bf16_hardware": hardware_bf16,
        "bf16_note": (
            "bf16 arithmetic in hardware ("
            + ", ".join(f for f in CPU_BF16_FLAGS if f in flags)
            + ")"
            if hardware_bf16
            else "NO bf16 hardware (no AVX512-BF16, no AMX): bf16 autocast on this CPU converts "
            "in software and is slower than fp32; use it to test, not to train"
        ),
    }


def gpu_report() -> list[dict]:
    """Each visible CUDA device: name, memory, compute capability, bf16."""
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "compute_capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                # bf16 tensor cores from Ampere (8.0) on; before, bf16 is emulated and slow
                "bf16": props.major >= 8,
            }
        )
    return gpus


def torch_report() -> dict:
    cudnn = torch.backends.cudnn
    nccl = None
    if torch.cuda.is_available() and torch.distributed.is_nccl_available():
        version = torch.cuda.nccl.version()  # a tuple, or one int in some builds
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "nccl": nccl,
        "gloo": torch.distributed.is_available() and torch.distributed.is_gloo_available(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": cudnn.allow_tf32,
        "cudnn_benchmark": cudnn.benchmark,
        "onednn": torch.backends.mkldnn.is_available(),
    }


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def ffmpeg_libraries() -> dict[str, str]:
    """PyAV's FFmpeg libraries and their versions ({} without PyAV)."""
    try:
        av = importlib.import_module("av")
    except ImportError:
        return {}
    return {name: ".".join(map(str, v)) for name, v in av.library_versions.items()}


def probe_bf16_conv_in_child(timeout_s: float = 120) -> str:
    """Run oneDNN's failing bf16 case in a child process (it can corrupt the heap):
    "wrong", "right" or what went wrong with the child."""
    code = "from videogn.models.conv import probe_cpu_bf16_conv_weight_grad as p; print(p())"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    if result.returncode != 0:
        return f"crashed (exit {result.returncode})"
    return "wrong" if result.stdout.strip() == "True" else "right"


def collect_environment(*, probe_bf16: bool = True) -> dict:
    """Everything the report prints, as one JSON-able dict."""
    from videogn.doctor.warnings import known_problems

    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch_report(),
        "cpu": cpu_report(),
        "gpus": gpu_report(),
        "packages": package_versions(),
        "ffmpeg": ffmpeg_libraries(),
        "cpu_bf16_conv_weight_grad": probe_bf16_conv_in_child() if probe_bf16 else "not probed",
    }
    report["warnings"] = known_problems(report)
    return report
