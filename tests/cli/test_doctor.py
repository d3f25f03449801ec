"""videogn-doctor on the CPU: the environment report, its warnings, --data, the bench's parts."""

from __future__ import annotations

import json

import pytest
import torch

from videogn.cli.doctor import main
from videogn.doctor import bench, loading
from videogn.doctor.environment import cpu_flags
from videogn.doctor.warnings import known_problems
from videogn.sweep.cells import TABLE8


def test_environment_report_names_the_stack_and_the_cpu_bf16_verdict(tmp_path, capsys):
    assert main(["--json", str(tmp_path / "env.json"), "--markdown", str(tmp_path / "env.md")]) == 0
    printed = capsys.readouterr().out
    env = json.loads((tmp_path / "env.json").read_text())["environment"]
    assert env["torch"]["torch"] == torch.__version__ and f"torch {torch.__version__}" in printed
    hardware = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert env["cpu"]["bf16_hardware"] == hardware
    assert ("NO bf16 hardware" in printed) == (not hardware)
    assert env["cpu_bf16_conv_weight_grad"] in ("wrong", "right")
    assert "libavcodec" in env["ffmpeg"] and "PyAV's FFmpeg" in printed
    assert "## Environment" in (tmp_path / "env.md").read_text()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nflags\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "missing") == set()


def _report(**changes) -> dict:
    report = {
        "torch": dict(torch="2.x", cuda_build="13.0", cuda_available=True, tf32_cudnn=False),
        "cpu": dict(bf16_hardware=True, bf16_note="", onednn_bf16_kernels=True, machine="x86_64"),
        "gpus": [dict(index=0, name="V100", compute_capability="7.0", bf16=False)],
        "packages": {"av": "14", "decord": "0.6", "submitit": "1", "hydra-submitit-launcher": "1"},
        "cpu_bf16_conv_weight_grad": "right",
    }
    report["torch"]["nccl"] = "2.2"
    report.update(changes)
    return report


def test_warnings_name_the_known_bad_combinations():
    assert any("no bf16 tensor cores" in w for w in known_problems(_report()))
    wrong = known_problems(_report(cpu_bf16_conv_weight_grad="wrong"))
    assert any("float32" in w and "oneDNN" in w for w in wrong)
    inactive = _report(cpu_bf16_conv_weight_grad="wrong")
    inactive["cpu"]["onednn_bf16_kernels"] = False
    assert any("NOT active" in w for w in known_problems(inactive))
    no_av = _report()
    no_av["packages"]["av"] = None
    assert any("PyAV is not installed" in w for w in known_problems(no_av))


def test_data_check_decodes_the_list_and_names_the_broken_video(tmp_path, capsys):
    records = loading.generate_videos(tmp_path / "videos", 2, frames=24, short_side=64)
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    listing = tmp_path / "list.txt"
    names = [f"{r.path.rsplit('/', 1)[-1]} {r.label}" for r in records] + ["broken.mp4 0"]
    listing.write_text("\n".join(names) + "\n")
    code = main(["--data", str(listing), "--root", str(tmp_path / "videos"), "--workers", "1"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "2/3 decoded (of 3 listed)" in printed
    assert "FAILED" in printed and "broken.mp4" in printed


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_bench_step_memory_is_measured_next_to_the_planner(norm):
    cell = next(c for c in TABLE8 if c.norm == norm and c.batch == 4 and c.num_frames == 32)
    result = bench.bench_config(bench.QUICK, cell, torch.device("cpu"), "fp32", True)
    assert result.clip == "8x2" and result.clips_per_s > 0
    assert 0.8 < result.memory_ratio < 1.25, result.as_dict()


def test_gn_over_bn_pairs_rows_of_the_same_configuration():
    rows = [
        bench.StepResult(n, "8x2", 4, "fp32", "ncdhw", s, 4 / s, 1.0, 1.0)
        for n, s in (("bn", 0.2), ("gn", 0.3))
    ]
    bench.add_gn_over_bn(rows)
    assert rows[0].gn_over_bn is None and rows[1].gn_over_bn == pytest.approx(1.5)


def test_loader_throughput_says_how_many_workers_the_step_needs(tmp_path):
    records = loading.generate_videos(tmp_path, 2, frames=24, short_side=64)
    result = loading.loader_throughput(records, [1], demand_clips_per_s=1000.0)
    (row,) = result["rows"]
    assert row["workers"] == 1 and row["clips_per_s"] > 0 and "failures" not in row
    # no single worker decodes 1000 clips/s: the answer is the demand over one worker's rate
    assert result["workers_needed"] == pytest.approx(1000.0 / row["per_worker"], abs=1)
    assert result["enough_at"] is None
