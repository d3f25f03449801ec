"""Known-bad combinations, read off the environment report (one sentence each, with the fix)."""

from __future__ import annotations


def _cpu_problems(report: dict) -> list[str]:
    cpu, probe = report["cpu"], report["cpu_bf16_conv_weight_grad"]
    problems = []
    if probe == "wrong" or probe.startswith("crashed"):
        active = cpu["onednn_bf16_kernels"]
        problems.append(
            f"torch {report['torch']['torch']}'s oneDNN returns a {probe} bf16 conv weight "
            "gradient on this CPU (garbage/NaN for small inputs; see videogn/models/conv.py): "
            + (
                "videogn's Conv3d computes bf16 weight gradients in float32 here, so videogn "
                "models train; other bf16 CPU code needs ONEDNN_MAX_CPU_ISA=AVX2"
                if active
                else "videogn's float32 detour is NOT active on this CPU; train in fp32 or set "
                "ONEDNN_MAX_CPU_ISA=AVX2, and report this"
            )
        )
    if not cpu["bf16_hardware"]:
        problems.append("CPU: " + cpu["bf16_note"])
    return problems


def _gpu_problems(report: dict) -> list[str]:
    torch_info, problems = report["torch"], []
    if torch_info["cuda_build"] and not torch_info["cuda_available"]:
        problems.append(
            f"torch is built for CUDA {torch_info['cuda_build']} but sees no GPU "
            "(driver, CUDA_VISIBLE_DEVICES, or a CPU-only node): training runs on the CPU"
        )
    for gpu in report["gpus"]:
        if not gpu["bf16"]:
            problems.append(
                f"GPU {gpu['index']} ({gpu['name']}, sm {gpu['compute_capability']}) has no "
                "bf16 tensor cores: use trainer.amp=fp16 (with its grad scaler) or fp32"
            )
    if report["gpus"] and torch_info["tf32_cudnn"]:
        problems.append(
            "TF32 is on for cuDNN convolutions (torch's default): the paper's numbers are "
            "fp32; set trainer.tf32=false to reproduce them exactly"
        )
    if report["gpus"] and torch_info["nccl"] is None:
        problems.append("GPUs without NCCL: multi-GPU training falls back to gloo (slow)")
    return problems


def _package_problems(report: dict) -> list[str]:
    packages, problems = report["packages"], []
    if packages["av"] is None:
        problems.append("PyAV is not installed: no video can be decoded (pip install av)")
    if packages["decord"] is None and report["cpu"]["machine"] in ("x86_64", "AMD64"):
        problems.append("decord is not installed: data.backend=decord is unavailable (optional)")
    if packages["submitit"] is None or packages["hydra-submitit-launcher"] is None:
        problems.append(
            "submitit / hydra-submitit-launcher missing: no SLURM launch "
            "(pip install hydra-submitit-launcher)"
        )
    return problems


def known_problems(report: dict) -> list[str]:
    """Warnings for the report's environment, most severe first."""
    return _cpu_problems(report) + _gpu_problems(report) + _package_problems(report)
