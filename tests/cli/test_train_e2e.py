"""``videogn-train`` / ``videogn-test`` end to end, as subprocesses on the real data pipeline
(a tiny generated demo dataset): train + 10-clip test, test from a run dir, a 2-process DDP run
(gloo), SIGKILL mid-epoch then resume with identical losses, SIGTERM, and NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from videogn.data.demo import ensure_demo_dataset
from videogn.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from videogn.engine.metrics import read_metrics
from videogn.models.factory import create_model

pytestmark = pytest.mark.slow

DEMO = {
    "num_classes": 4,
    "train_videos_per_class": 4,
    "val_videos_per_class": 2,
    "frames_per_video": 24,
    "frame_size": 32,
    "event_gap": 8,
    "event_length": 2,
}


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("demo_cache")
    ensure_demo_dataset(cache, **DEMO)
    return cache


def tiny_overrides(demo_cache: Path, run_dir: Path, *extra: str) -> list[str]:
    """The demo config shrunk to seconds: 16 training videos of 32x32, 8 frames."""
    params = [f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"]
    return [
        f"hydra.run.dir={run_dir}",
        f"data.demo.cache_dir={demo_cache}",
        *params,
        f"data.num_classes={DEMO['num_classes']}",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.scale_range=[32,36]",
        "data.crop_size=32",
        "sampler=8x2",
        "optim.epochs=2",
        "optim.base_lr=0.4",
        "test.short_side=48",  # larger than training crops: fully convolutional testing
        "test.crop_size=48",
        "test.num_workers=0",
        "trainer.num_threads=1",
        "trainer.progress_bar=false",
        "trainer.precise_bn.num_batches=2",
        "trainer.log_period=1",
        *extra,
    ]


def command(script: str, *args: str, nproc: int = 1) -> list[str]:
    if nproc > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            f"videogn.cli.{script}",
            *args,
        ]
    return [sys.executable, "-m", f"videogn.cli.{script}", *args]


def start(args: list[str]) -> subprocess.Popen:
    """Start a command; its log (hydra logs to stdout) and errors come back together."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command to its end; one that hangs is aborted with SIGABRT, so faulthandler
    prints where it was stuck."""
    process = start(args)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        output, _ = process.communicate()
        raise AssertionError(f"timed out after {timeout} s:\n{output[-8000:]}") from None
    return subprocess.CompletedProcess(args, process.returncode, output)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-6000:]


def train_losses(run_dir: Path) -> dict[int, list[float]]:
    losses: dict[int, list[float]] = {}
    for record in read_metrics(run_dir / "metrics.jsonl", "train"):
        losses.setdefault(record["step"], []).append(record["loss"])
    return losses


def test_demo_train_then_test(demo_cache, tmp_path):
    run_dir = tmp_path / "run"
    result = run(command("train", *tiny_overrides(demo_cache, run_dir)))
    check_ok(result)
    assert "chance 25.0%" in result.stdout and "videogn-test checkpoint=" in result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["videos_listed"] == results["videos_evaluated"] == 8
    assert results["num_clips"] == 10 and results["views_per_video"] == 10
    assert 0 <= results["video_top1"] <= 100 and len(results["per_class_accuracy"]) == 4
    scores = np.load(run_dir / "video_scores.npz")
    assert scores["scores"].shape == (8, 4)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    train = read_metrics(run_dir / "metrics.jsonl", "train")
    assert train[-1]["step"] == 8 and {"loss", "lr", "top1", "clips_per_s"} <= set(train[-1])

    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["position"] == {
        "epoch": 2,
        "iteration_in_epoch": 0,
        "global_iteration": 8,
        "sampler_seed": 0,
    }
    assert checkpoint["config"]["model"]["base_width"] == 8
    # Training checkpoints double as pretrained weights (state dict under "model").
    model = create_model(
        "i3d_r50",
        norm="bn",
        num_classes=4,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
        pretrained=str(latest_checkpoint(run_dir)),
    )
    torch.testing.assert_close(model.head.fc.weight, checkpoint["model"]["head.fc.weight"])

    # videogn-test restores the model from the run dir; command-line keys override the rest.
    result = run(
        command(
            "test",
            f"checkpoint={run_dir}",
            "test.num_crops=3",
            "test.num_clips=2",
            "test.num_workers=0",
            "trainer.num_threads=1",
        )
    )
    assert result.returncode == 2 and "trainer" in result.stdout  # not a key of videogn-test
    result = run(
        command(
            "test",
            f"checkpoint={run_dir}",
            "test.num_crops=3",
            "test.num_clips=2",
            "test.num_workers=0",
        )
    )
    check_ok(result)
    (test_dir,) = run_dir.glob("test_*")
    results = json.loads((test_dir / "results.json").read_text())
    assert results["views_per_video"] == 6 and results["num_crops"] == 3
    assert results["videos_evaluated"] == 8 and results["checkpoint"].endswith(".pt")


def test_two_process_ddp_run(demo_cache, tmp_path):
    run_dir = tmp_path / "ddp"
    overrides = tiny_overrides(demo_cache, run_dir, "optim.epochs=1", "trainer.val_period=1")
    result = run(command("train", *overrides, nproc=2))
    check_ok(result)
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    # 16 videos / (4 clips x 2 processes) = 2 iterations; total batch 8.
    assert checkpoint["position"]["global_iteration"] == 2
    results = json.loads((run_dir / "results.json").read_text())
    assert results["videos_listed"] == results["videos_evaluated"] == 8  # each video once
    # Validation is sharded too: the 8 val videos once each, summed over the two ranks.
    rows = read_metrics(run_dir / "metrics.jsonl", "val")
    assert [(r["step"], r["num_videos"]) for r in rows] == [(1, 8), (2, 8)]


def test_demo_run_writes_validation_rows_and_tensorboard_scalars(demo_cache, tmp_path):
    """Figure 7's monitor in a real run: 1-clip val error every 3 iterations and at the end
    (8 iterations), in metrics.jsonl and the TensorBoard event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "val"
    overrides = ["trainer.val_period=3", "trainer.val_videos=6", "trainer.test_at_end=false"]
    check_ok(run(command("train", *tiny_overrides(demo_cache, run_dir, *overrides))))
    rows = read_metrics(run_dir / "metrics.jsonl", "val")
    assert [r["step"] for r in rows] == [3, 6, 8]
    for row in rows:
        assert row["num_videos"] == 6  # the fixed subset of the 8 listed val videos
        assert 0 <= row["top5_err"] <= row["top1_err"] <= 100 and row["train_top1_err"] >= 0
    train = read_metrics(run_dir / "metrics.jsonl", "train")
    assert all(r["top1_err"] == pytest.approx(100 - r["top1"]) for r in train)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for tag in ("val/top1_err", "val/top5_err", "val/num_videos", "train/top1_err"):
        assert tag in events.Tags()["scalars"], tag
    logged = [(e.step, e.value) for e in events.Scalars("val/top1_err")]
    assert logged == [(r["step"], pytest.approx(r["top1_err"])) for r in rows]


def wait_for_train_records(process, run_dir: Path, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and len(read_metrics(metrics, "train")) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.stdout.read()[-3000:]}")
        time.sleep(0.01)
    raise AssertionError("training did not log in time")


def test_sigkill_mid_epoch_then_resume_reproduces_losses(demo_cache, tmp_path):
    # Batches of 2: 8 iterations per epoch, 2 epochs; checkpoints every 3 iterations.
    settings = [
        "deterministic=true",
        "data.batch_size=2",
        "trainer.checkpoint_period=3",
        "trainer.test_at_end=false",
    ]
    reference = tmp_path / "reference"
    check_ok(run(command("train", *tiny_overrides(demo_cache, reference, *settings))))

    victim = tmp_path / "victim"
    args = command("train", *tiny_overrides(demo_cache, victim, *settings))
    process = start(args)
    try:
        wait_for_train_records(process, victim, 4)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    position = load_checkpoint(victim)["position"]
    assert position["iteration_in_epoch"] != 0, f"not a mid-epoch checkpoint: {position}"

    check_ok(run(command("train", *tiny_overrides(demo_cache, victim, *settings))))
    expected, got = train_losses(reference), train_losses(victim)
    assert sorted(got) == sorted(expected) == list(range(1, 17))
    for step, losses in got.items():
        # Iterations redone after the kill appear twice; each must match the reference.
        assert losses == expected[step] * len(losses), f"iteration {step}"


def test_sigterm_saves_and_exits_cleanly(demo_cache, tmp_path):
    run_dir = tmp_path / "preempted"
    args = command(
        "train",
        *tiny_overrides(
            demo_cache,
            run_dir,
            "data.batch_size=2",
            "optim.epochs=20",
            "trainer.checkpoint_period=0",
        ),
    )
    process = start(args)
    try:
        wait_for_train_records(process, run_dir, 2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:]
    assert "received SIGTERM" in output and "preempted" in output
    logged = read_metrics(run_dir / "metrics.jsonl", "train")[-1]["step"]
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["position"]["global_iteration"] == logged
    assert not (run_dir / "results.json").exists()


def test_nan_stops_with_a_diagnosis_and_keeps_the_last_good_checkpoint(demo_cache, tmp_path):
    run_dir = tmp_path / "nan"
    result = run(
        command(
            "train",
            *tiny_overrides(
                demo_cache,
                run_dir,
                "optim.base_lr=1e9",
                "optim.warmup_epochs=0",
                "trainer.checkpoint_period=1",
            ),
        )
    )
    assert result.returncode == 3, result.stdout[-3000:]
    message = result.stdout
    assert "non-finite loss or gradient at iteration" in message and "lr=" in message
    assert "layers with non-finite gradients" in message and "stem.conv" in message
    failed = read_metrics(run_dir / "metrics.jsonl", "error")[0]["step"]
    saved = [int(p.stem.split("_")[1]) for p in list_checkpoints(run_dir)]
    assert saved and max(saved) == failed - 1
    assert os.path.getsize(latest_checkpoint(run_dir)) > 0


def test_videogn_test_on_the_full_frame_of_non_square_videos(demo_cache, tmp_path):
    """test.num_crops=full through videogn-test: each clip is one view of the whole frame at
    the short side (4:3 -> 48x64, 16:9 -> 48x85), and a video that cannot be decoded counts
    as wrong in the listed-videos accuracy."""
    from videogn.data.video_writer import write_video

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(demo_cache, run_dir, "trainer.test_at_end=false")
    check_ok(run(command("train", *overrides)))
    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i, (height, width) in enumerate([(48, 64), (36, 64), (48, 64)]):
        write_video(videos / f"v{i}.mp4", rng.integers(0, 256, (20, height, width, 3), np.uint8))
        lines.append(f"v{i}.mp4 {i}")
    (videos / "broken.mp4").write_bytes(b"not a video")
    lines.append("broken.mp4 3")
    (videos / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "full_test"
    result = run(
        command(
            "test",
            f"checkpoint={run_dir}",
            f"hydra.run.dir={out}",
            "test.num_crops=full",
            "test.num_clips=2",
            "test.short_side=48",
            "test.num_workers=0",
            "data.source=lists",
            f"data.val_list={videos / 'list.txt'}",
            f"data.val_root={videos}",
        )
    )
    check_ok(result)
    results = json.loads((out / "results.json").read_text())
    assert results["num_crops"] == "full" and results["views_per_video"] == 2
    assert (results["videos_listed"], results["videos_evaluated"]) == (4, 3)
    hits = round(results["video_top1"] * 3 / 100)
    assert results["video_top1_listed"] == pytest.approx(100 * hits / 4)
    assert results["view_sizes"] == {"48x64": 2, "48x85": 1}  # whole frames, not crops


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(port: int, *args: str) -> list[str]:
    """One "node" of a two-node torchrun job on localhost: 1 process, c10d rendezvous."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id=videogn-test-{port}",
        "-m",
        "videogn.cli.train",
        *args,
    ]


def test_two_nodes_equal_one_node_with_two_processes(demo_cache, tmp_path):
    """Two torchrun "nodes" of one process each (c10d rendezvous, gloo) share one run
    directory, only rank 0 writes, and train + test give what one node with two processes
    gives: the same losses, weights and test results."""
    extra = ("optim.epochs=1", "trainer.precise_bn.num_batches=1")
    one_node = tmp_path / "one_node"
    check_ok(run(command("train", *tiny_overrides(demo_cache, one_node, *extra), nproc=2)))
    two_nodes = tmp_path / "two_nodes"
    port = free_port()
    nodes = [start(node_command(port, *tiny_overrides(demo_cache, two_nodes, *extra)))]
    nodes.append(start(node_command(port, *tiny_overrides(demo_cache, two_nodes, *extra))))
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-6000:]

    # rank 0 alone wrote: one record per step, one checkpoint per save, as on one node
    assert train_losses(two_nodes) == pytest.approx(train_losses(one_node), rel=1e-6)
    assert all(len(losses) == 1 for losses in train_losses(two_nodes).values())
    names = sorted(p.name for p in list_checkpoints(two_nodes))
    assert names == sorted(p.name for p in list_checkpoints(one_node)) and names
    first, second = load_checkpoint(one_node), load_checkpoint(two_nodes)
    assert second["world_size"] == 2 and second["position"] == first["position"]
    for name, weight in first["model"].items():
        torch.testing.assert_close(second["model"][name], weight, rtol=1e-6, atol=1e-7)
    results = [json.loads((d / "results.json").read_text()) for d in (one_node, two_nodes)]
    for key in ("videos_evaluated", "video_top1", "video_top5", "clip_top1"):
        assert results[1][key] == results[0][key], key


def test_activation_checkpointing_trains_to_the_same_losses_and_bn_statistics(demo_cache, tmp_path):
    # Three iterations of the BN demo model, with every stage checkpointed and without.
    runs = {}
    for setting in ("none", "all"):
        run_dir = tmp_path / setting
        extra = (
            f"trainer.activation_checkpointing={setting}",
            "trainer.max_iterations=3",
            "trainer.checkpoint_period=3",
            "trainer.test_at_end=false",
        )
        result = run(command("train", *tiny_overrides(demo_cache, run_dir, *extra, "norm=bn")))
        check_ok(result)
        runs[setting] = run_dir
    assert "Activation checkpointing (given): stem, res2, res3, res4, res5." in (
        (runs["all"] / "train.log").read_text()
    )
    plain, checkpointed = train_losses(runs["none"]), train_losses(runs["all"])
    assert sorted(plain) == sorted(checkpointed) == [1, 2, 3]
    for step in plain:
        assert checkpointed[step] == pytest.approx(plain[step], rel=1e-5)
    states = [load_checkpoint(latest_checkpoint(runs[s])) for s in runs]
    for name, value in states[0]["model"].items():
        if "running_" in name or "num_batches_tracked" in name:
            torch.testing.assert_close(states[1]["model"][name], value, rtol=1e-5, atol=1e-6)
