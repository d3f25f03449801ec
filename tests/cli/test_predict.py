"""``videogn-predict`` on real videos (the shared clips) with a checkpoint of a short real
demo training run: top-k names and scores equal to the engine's own multi-view test of the
same video, JSON output, undecodable videos reported, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogn.cli.predict import main as predict_main
from videogn.data.demo import ensure_demo_dataset
from videogn.data.lists import VideoRecord
from videogn.engine.distributed import DistInfo
from videogn.engine.evaluate import evaluate_shard
from videogn.engine.run import input_preparation, restore_run

DEMO = dict(num_classes=4, train_videos_per_class=4, val_videos_per_class=1,
            frames_per_video=24, frame_size=32, event_gap=8, event_length=2)  # fmt: skip
GOOD = ["mmaction2_demo.mp4", "moviepy_big_buck_bunny_432_433.webm"]  # the second: 24 frames


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A demo run of 2 epochs x 4 iterations (the real data pipeline and trainer)."""
    cache = tmp_path_factory.mktemp("demo_cache")
    ensure_demo_dataset(cache, **DEMO)
    run_dir = tmp_path_factory.mktemp("run")
    params = [f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"]
    overrides = [
        f"hydra.run.dir={run_dir}", f"data.demo.cache_dir={cache}", *params,
        f"data.num_classes={DEMO['num_classes']}", "data.batch_size=4", "data.num_workers=0",
        "data.scale_range=[32,36]", "data.crop_size=32", "sampler=8x2", "optim.epochs=2",
        "test.short_side=48", "test.crop_size=48", "test.num_clips=3", "test.num_workers=0",
        "trainer.num_threads=1", "trainer.progress_bar=false", "trainer.test_at_end=false",
        "trainer.precise_bn.num_batches=2",
    ]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "videogn.cli.train", *overrides],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return run_dir


def predict_json(capsys, *args: str) -> tuple[int, dict]:
    status = predict_main([*args, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_scores_are_the_runs_own_multi_view_test(run_dir, shared_videos, capsys):
    videos = [str(shared_videos / name) for name in GOOD]
    status, out = predict_json(capsys, *videos, f"checkpoint={run_dir}", "top_k=4")
    assert status == 0 and [r["video"] for r in out["results"]] == videos
    run = restore_run(run_dir, dist=DistInfo(), loader_workers=0)
    assert "3 clips x 1 crop of 8x2 frames, mean of softmax" in out["protocol"]
    records = [VideoRecord(v, 0) for v in videos]
    dataset = run.spec.data.test_dataset(records, run.spec.samplers.test, run.spec.test_transform())
    engine = evaluate_shard(run.model, dataset, [0, 1], device=torch.device("cpu"),
                            num_workers=0, prepare=input_preparation(run.spec))  # fmt: skip
    for result, expected in zip(out["results"], engine, strict=True):
        assert result["views"] == 3
        predictions = result["predictions"]
        assert [p["index"] for p in predictions] == expected.scores.argsort()[::-1].tolist()
        scores = [p["score"] for p in predictions]
        assert scores == pytest.approx(sorted(expected.scores.tolist(), reverse=True), abs=1e-6)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)  # all 4 classes: a distribution
    # the demo's class names come with the run's dataset
    assert {p["class"] for p in out["results"][0]["predictions"]} == set(
        Path(run.spec.data.resolve(run.dist).classes_file).read_text().split()
    )


def test_full_frame_protocol_is_named(run_dir, shared_videos, capsys):
    """The Kinetics/Table 8 runs test on the full frame: the header says so (not "full crops")."""
    video = str(shared_videos / GOOD[1])
    status, out = predict_json(capsys, video, f"checkpoint={run_dir}", "test.num_crops=full")
    assert status == 0 and out["results"][0]["views"] == 3
    assert "3 clips x the full frame of 8x2 frames" in out["protocol"]


def test_predict_uses_the_runs_test_head(run_dir, shared_videos, capsys):
    """With test.head=fully_conv the scores are the engine's fully-convolutional test of the
    video (a 48x64 full frame: 2x2 positions of the 32-crop window), not the pooled head's."""
    video = str(shared_videos / GOOD[0])
    overrides = ["test.head=fully_conv", "test.num_crops=full"]
    _, fully_conv = predict_json(capsys, video, f"checkpoint={run_dir}", "top_k=4", *overrides)
    _, pooled = predict_json(capsys, video, f"checkpoint={run_dir}", "top_k=4",
                             "test.num_crops=full")  # fmt: skip
    run = restore_run(run_dir, overrides, dist=DistInfo(), loader_workers=0)
    assert run.spec.test.head.window == (1, 1, 1)
    dataset = run.spec.data.test_dataset([VideoRecord(video, 0)], run.spec.samplers.test,
                                         run.spec.test_transform())  # fmt: skip
    engine = evaluate_shard(
        run.model,
        dataset,
        [0],
        device=torch.device("cpu"),
        num_workers=0,
        prepare=input_preparation(run.spec),
        head=run.spec.test.head,
    )[0]
    by_class = {p["index"]: p["score"] for p in fully_conv["results"][0]["predictions"]}
    assert [by_class[i] for i in range(4)] == pytest.approx(engine.scores.tolist(), abs=1e-6)
    pooled_by_class = {p["index"]: p["score"] for p in pooled["results"][0]["predictions"]}
    assert [pooled_by_class[i] for i in range(4)] != pytest.approx(engine.scores.tolist(), abs=1e-6)


def test_text_output_names_classes_from_a_file_and_reports_bad_videos(
    run_dir, shared_videos, tmp_path, capsys
):
    classes = tmp_path / "classes.txt"
    classes.write_text("apple\nbanana\ncherry\ndate\n")
    garbage = tmp_path / "not_a_video.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    status = predict_main([
        str(shared_videos / "mmaction2_demo.mp4"), str(garbage), f"checkpoint={run_dir}",
        f"classes={classes}", "top_k=2", "test.num_crops=3",
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert status == 0
    assert "3 clips x 3 crops" in text
    lines = text.splitlines()
    at = lines.index(f"{shared_videos / 'mmaction2_demo.mp4'}:")
    ranked = lines[at + 1 : at + 3]
    assert [line.split()[0] for line in ranked] == ["1.", "2."]
    assert all(line.split()[1] in {"apple", "banana", "cherry", "date"} for line in ranked)
    assert float(ranked[0].split()[2]) >= float(ranked[1].split()[2])
    assert any(line.startswith(f"{garbage}: could not be decoded: ") for line in lines)


def test_every_video_failing_exits_1_and_bad_arguments_are_clear(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    status, out = predict_json(capsys, str(missing), f"checkpoint={run_dir}")
    assert status == 1 and out["results"][0]["error"] and out["results"][0]["predictions"] == []
    wrong = tmp_path / "three.txt"
    wrong.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="names 3 classes; the model has 4"):
        predict_main([str(missing), f"checkpoint={run_dir}", f"classes={wrong}"])
    result = subprocess.run([sys.executable, "-m", "videogn.cli.predict", "video.mp4"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "checkpoint=RUN_DIR" in result.stderr


def test_many_videos_are_decoded_by_loader_workers_in_order_with_a_progress_bar(
    run_dir, shared_videos, tmp_path, capsys
):
    garbage = tmp_path / "not_a_video.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    good = str(shared_videos / GOOD[1])
    videos = [good] * 4 + [str(garbage)] + [good] * 4  # 9: the bar shows from 8
    _, alone = predict_json(capsys, good, f"checkpoint={run_dir}", "test.num_workers=0")
    status = predict_main([*videos, f"checkpoint={run_dir}", "test.num_workers=2", "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert status == 0 and [r["video"] for r in out["results"]] == videos
    assert "error" in out["results"][4] and "error" not in out["results"][8]
    expected = alone["results"][0]["predictions"]
    for result in out["results"][:4] + out["results"][5:]:  # the same scores as decoded here
        assert [p["index"] for p in result["predictions"]] == [p["index"] for p in expected]
        scores = [p["score"] for p in result["predictions"]]
        assert scores == pytest.approx([p["score"] for p in expected], abs=1e-6)
    assert "9/9" in captured.err  # tqdm's bar on stderr; stdout stays JSON
