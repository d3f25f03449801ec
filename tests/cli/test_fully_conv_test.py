"""``videogn-test test.head=fully_conv`` on a 4:3 and a 16:9 video (PyAV-encoded) tested on the
full frame: the scores it writes equal a hand computation of the Non-local test head (an
average of the training clip's res5 window at every position, the fc, a softmax per position,
the mean over positions and clips), with the window taken from the *training* clip even when
the test overrides the sampler."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from videogn.config import CONFIG_DIR, register_configs
from videogn.data.lists import VideoRecord
from videogn.data.video_writer import write_video
from videogn.engine.builders import build_run_spec
from videogn.engine.distributed import DistInfo
from videogn.engine.run import input_preparation, restore_run

SIZES = {"four_three.mp4": (48, 64), "sixteen_nine.mp4": (36, 64)}  # (height, width)


def write_checkpoint(root) -> str:
    """An untrained toy I3D (BN, random head) with the recorded config of a run trained on
    8x2 clips of 48x48 crops: its fully_conv window is (1, 2, 2)."""
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[
            "data=kinetics400", f"data.root={root}", "data.num_classes=3", "data.crop_size=48",
            "sampler=8x2", "model=i3d_tiny", "test.num_workers=0", "device=cpu",
        ])  # fmt: skip
    torch.manual_seed(0)
    model = build_run_spec(cfg).model.create(pretrained=False)
    torch.nn.init.normal_(model.head.fc.weight, std=0.3)
    path = root / "toy.pt"
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    torch.save({"model": model.state_dict(), "config": config}, path)
    return str(path)


def hand_scores(model, views: torch.Tensor, window) -> torch.Tensor:
    """Per clip: every window position's fc, softmax, mean over positions; then over clips."""
    with torch.no_grad():
        features = model.forward_features(views)  # [K, C, t, h, w]
        wt, wh, ww = window
        probs = []
        for t in range(features.shape[2] - wt + 1):
            for i in range(features.shape[3] - wh + 1):
                for j in range(features.shape[4] - ww + 1):
                    cell = features[:, :, t : t + wt, i : i + wh, j : j + ww].mean(dim=(2, 3, 4))
                    probs.append(model.head.fc(cell).softmax(dim=1))
        return torch.stack(probs).mean(dim=0).mean(dim=0)  # positions, then clips


def test_videogn_test_fully_conv_scores_are_the_per_window_softmax_mean(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in SIZES.items():
        write_video(val / name, rng.integers(0, 256, (24, height, width, 3), dtype=np.uint8))
    (val / "val.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(SIZES)))
    checkpoint = write_checkpoint(tmp_path)
    # 16x1 test clips (res5 t=2) on the full frame at short side 64: 64x85 and 64x113 views
    # (res5 2x3 and 2x4); the 8x2-trained window (1, 2, 2) leaves 2x1x2 and 2x1x3 positions.
    overrides = [
        "test.head=fully_conv",
        "test.num_crops=full",
        "test.short_side=64",
        "test.num_clips=2",
        "sampler.num_frames=16",
        "sampler.frame_interval=1",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "videogn.cli.test", f"checkpoint={checkpoint}", *overrides,
         f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = np.load(tmp_path / "out" / "video_scores.npz")

    run = restore_run(checkpoint, overrides, dist=DistInfo(), loader_workers=0)
    assert run.spec.test.head.window == (1, 2, 2)  # the training clip's, not the test's
    records = [VideoRecord(str(val / name), i) for i, name in enumerate(SIZES)]
    dataset = run.spec.data.test_dataset(records, run.spec.samplers.test, run.spec.test_transform())
    prepare = input_preparation(run.spec)
    for index, name in enumerate(SIZES):
        views = prepare(dataset[index]["views"])
        assert views.shape[-2:] == ((64, 85), (64, 113))[index]
        expected = hand_scores(run.model, views, (1, 2, 2))
        assert written["paths"][index].endswith(name)
        np.testing.assert_allclose(written["scores"][index], expected.numpy(), atol=1e-6)
        with torch.no_grad():  # the pooled head would give other scores on these views
            pooled = run.model(views).softmax(dim=1).mean(dim=0)
        assert not np.allclose(written["scores"][index], pooled.numpy(), atol=1e-4)
