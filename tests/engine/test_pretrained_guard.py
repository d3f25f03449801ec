"""No silent from-scratch run: with ``model.require_pretrained`` (the Kinetics and Table 8
experiments), a null ``model.pretrained`` stops the run when it is built, naming the environment
variable (or key) to set; ``model.pretrained=none`` is scratch on purpose, and trains."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from videogn.config import CONFIG_DIR, register_configs
from videogn.data.demo import ensure_demo_dataset
from videogn.engine.builders.model import PretrainedRequiredError, build_model_spec

register_configs()
DEMO = {
    "num_classes": 2,
    "train_videos_per_class": 2,
    "val_videos_per_class": 1,
    "frames_per_video": 16,
    "frame_size": 32,
    "event_gap": 6,
    "event_length": 2,
}


@pytest.fixture(scope="module")
def make_cfg():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))


def spec_of(cfg):
    return build_model_spec(cfg.model, cfg.norm)


def test_table8_cells_default_to_the_named_imagenet_files(make_cfg, monkeypatch):
    monkeypatch.delenv("VIDEOGN_PRETRAINED_BN", raising=False)
    monkeypatch.delenv("VIDEOGN_PRETRAINED_GN", raising=False)
    for experiment, source in (
        ("table8/bn_32x2_bs8", "torchvision:resnet50"),
        ("table8/gn_64x1_bs4", "detectron:R-50-GN"),
        ("kinetics400_i3d_bn", "torchvision:resnet50"),
        ("kinetics400_i3d_gn", "detectron:R-50-GN"),
    ):
        cfg = make_cfg(f"experiment={experiment}", "data.root=/k400")
        assert cfg.model.require_pretrained and spec_of(cfg).pretrained == source


def test_an_empty_variable_stops_the_cell_naming_the_variable(make_cfg, monkeypatch):
    monkeypatch.setenv("VIDEOGN_PRETRAINED_GN", "")
    cfg = make_cfg("experiment=table8/gn_32x2_bs8", "data.root=/k400")
    with pytest.raises(PretrainedRequiredError, match="environment variable VIDEOGN_PRETRAINED_GN"):
        spec_of(cfg)


def test_a_mini_cell_without_its_variable_names_it(make_cfg, monkeypatch):
    monkeypatch.delenv("VIDEOGN_MINI_PRETRAINED_BN", raising=False)
    cfg = make_cfg("experiment=mini_table8/bn_32x2_bs8", "data.root=/mini")
    with pytest.raises(PretrainedRequiredError, match="VIDEOGN_MINI_PRETRAINED_BN"):
        spec_of(cfg)


def test_a_null_given_as_a_key_names_the_key_and_none_means_scratch(make_cfg):
    cfg = make_cfg("experiment=table8/bn_32x2_bs4", "data.root=/k", "model.pretrained=null")
    with pytest.raises(PretrainedRequiredError, match="set model.pretrained to") as error:
        spec_of(cfg)
    assert "model.pretrained=none" in str(error.value)
    for scratch in ("none", "None", "NONE"):
        cfg = make_cfg(
            "experiment=table8/bn_32x2_bs4", "data.root=/k", f"model.pretrained={scratch}"
        )
        assert spec_of(cfg).pretrained is None
    assert spec_of(make_cfg("model.pretrained=null")).pretrained is None  # not required: fine


def train(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cache = tmp_path / "demo"
    ensure_demo_dataset(cache, **DEMO)
    params = [f"data.demo.params.{k}={v}" for k, v in DEMO.items() if k != "num_classes"]
    overrides = [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.demo.cache_dir={cache}",
        *params,
        f"data.num_classes={DEMO['num_classes']}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.scale_range=[32,36]",
        "data.crop_size=32",
        "sampler=8x2",
        "optim.epochs=1",
        "test.num_clips=2",
        "test.short_side=32",
        "test.crop_size=32",
        "test.num_workers=0",
        "trainer.num_threads=1",
        "trainer.progress_bar=false",
        "trainer.precise_bn.enabled=false",
        "model.require_pretrained=true",
        *extra,
    ]
    command = [sys.executable, "-m", "videogn.cli.train", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def test_train_stops_before_training_and_trains_with_none(tmp_path):
    stopped = train(tmp_path / "a", "model.pretrained=null")
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert "set model.pretrained to" in output
    assert not (tmp_path / "a" / "run" / "checkpoints").exists()

    trained = train(tmp_path / "b", "model.pretrained=none")
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    results = json.loads((tmp_path / "b" / "run" / "results.json").read_text())
    assert results["videos_evaluated"] == 2
