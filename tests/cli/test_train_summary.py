"""``videogn-train``'s closing summary names only the outputs that exist."""

from __future__ import annotations

from videogn.cli.train import format_summary


def summary(run_dir, status: str) -> dict:
    return {"run_dir": str(run_dir), "status": status, "iterations": 3, "world_size": 1,
            "rank": 0, "checkpoint": str(run_dir / "checkpoints" / "iter_00000003.pt")}  # fmt: skip


def test_a_run_stopped_by_max_iterations_does_not_claim_test_results(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    text = format_summary(summary(tmp_path, "stopped"), 12.0)
    assert "results.json" not in text and "video_scores.npz" not in text
    assert "no test results: the test did not run" in text
    assert "metrics.jsonl" in text and "iter_00000003.pt" in text


def test_a_tested_run_lists_its_results(tmp_path):
    for name in ("metrics.jsonl", "results.json", "video_scores.npz"):
        (tmp_path / name).write_text("")
    text = format_summary(summary(tmp_path, "finished"), 12.0)
    assert "results.json, video_scores.npz" in text and "did not run" not in text
