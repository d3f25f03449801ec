"""Every config file composes (with hydra's Compose API), resolves and builds; bad overrides
fail at compose time with messages that name the bad key or value and the valid choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from videogn.config import CONFIG_DIR, check_override_keys, register_configs
from videogn.engine.builders import build_run_spec

CONF = Path(CONFIG_DIR)
GROUPS = ("model", "norm", "data", "sampler", "optim")
EXPERIMENTS = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in (CONF / "experiment").rglob("*.yaml")
)
GROUP_OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
HYDRA_OPTIONS = sorted(  # hydra's own groups, e.g. hydra/launcher/*.yaml
    (p.parent.relative_to(CONF).as_posix(), p.stem) for p in (CONF / "hydra").rglob("*.yaml")
)

register_configs()


@pytest.fixture(scope="module")
def hydra_compose():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield compose


@pytest.fixture(scope="module")
def compose_train(hydra_compose):
    return lambda overrides=(): hydra_compose("train", overrides=list(overrides))


@pytest.fixture(autouse=True)
def _mini_weights(monkeypatch):
    """The mini cells require their inflated files (model.require_pretrained); the study sets
    these variables, and the guard's own tests check what happens without them."""
    monkeypatch.setenv("VIDEOGN_MINI_PRETRAINED_BN", "/w/i3d_bn.pt")
    monkeypatch.setenv("VIDEOGN_MINI_PRETRAINED_GN", "/w/i3d_gn.pt")


def resolve_and_build(cfg) -> None:
    """Resolve every interpolation and build the model (on the meta device) and schedule."""
    if OmegaConf.is_missing(cfg.data, "root"):
        cfg.data.root = "/data/videos"  # a mandatory value the user gives on the command line
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    spec = build_run_spec(cfg)  # every group through its builder
    with torch.device("meta"):
        model = spec.model.create(pretrained=False)
    assert model.head.fc.out_features == cfg.data.num_classes
    schedule = spec.optim.schedule(iterations_per_epoch=100)
    assert schedule.total_iterations >= 1


def test_every_config_file_is_covered():
    yaml_files = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    covered = {"train.yaml", "test.yaml"}
    covered |= {f"{g}/{n}.yaml" for g, n in GROUP_OPTIONS}
    covered |= {f"experiment/{e}.yaml" for e in EXPERIMENTS}
    covered |= {f"{g}/{n}.yaml" for g, n in HYDRA_OPTIONS}
    assert yaml_files - covered == set(), "add the new config group to GROUPS"


def test_default_train_config_is_the_demo(compose_train):
    cfg = compose_train()
    resolve_and_build(cfg)
    assert cfg.data.source.name == "demo"
    assert cfg.test.num_clips == 10


def option_values(group: str, option: str) -> dict[str, object]:
    """The literal values an option file sets, by dotted key (interpolations and ??? left out)."""
    node = OmegaConf.load(CONF / group / f"{option}.yaml")
    values = {}

    def walk(node, prefix):
        for key in node:
            if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
                continue
            value = node[key]
            if OmegaConf.is_dict(value):
                walk(value, f"{prefix}{key}.")
            else:
                values[f"{prefix}{key}"] = (
                    OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
                )

    walk(node, "")
    return values


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_group_option_composes_and_takes_effect(compose_train, group, option):
    cfg = compose_train([f"{group}={option}"])
    resolve_and_build(cfg)
    values = option_values(group, option)
    assert values, f"{group}/{option}.yaml sets nothing"
    for key, expected in values.items():
        actual = OmegaConf.select(cfg[group], key)
        if hasattr(actual, "name") and not isinstance(expected, type(actual)):  # enum fields
            actual = actual.name
        if OmegaConf.is_list(actual):
            actual = OmegaConf.to_container(actual)
        assert actual == expected, (
            f"{group}={option}: {group}.{key} is {actual!r}, not {expected!r}"
        )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(compose_train, experiment):
    cfg = compose_train([f"experiment={experiment}"])
    resolve_and_build(cfg)


@pytest.mark.parametrize(("group", "option"), HYDRA_OPTIONS)
def test_hydra_option_composes(hydra_compose, group, option):
    cfg = hydra_compose("train", overrides=[f"{group}={option}"], return_hydra_config=True)
    node = OmegaConf.select(cfg, group.replace("/", "."))  # e.g. hydra.launcher
    assert node is not None and "_target_" in node


def test_kinetics_experiment_is_the_paper_recipe(compose_train):
    cfg = compose_train(["experiment=kinetics400_i3d_bn", "data.root=/k400"])
    assert cfg.model.name.name == "i3d_r50" and cfg.model.base_width == 64
    assert (cfg.sampler.num_frames, cfg.sampler.frame_interval) == (32, 2)
    assert cfg.data.train_list == "/k400/train/train.txt"
    assert (cfg.optim.base_lr, cfg.optim.base_batch_size, cfg.optim.momentum) == (0.01, 64, 0.9)
    assert cfg.optim.nesterov and cfg.optim.weight_decay == 1e-4
    assert list(cfg.optim.lr_steps) == [150 / 400, 300 / 400]
    assert cfg.model.dropout == 0.5 and cfg.test.crop_size == 256


def test_test_config_composes(hydra_compose):
    overrides = ["checkpoint=/runs/x", "sampler=64x1", "test.num_crops=3"]
    cfg = hydra_compose("test", overrides=overrides)
    assert cfg.sampler.num_frames == 64 and cfg.test.num_crops == 3


@pytest.mark.parametrize(
    ("override", "expected"),
    [("norm=gm", ["norm/gm", "gn", "sync_bn"]), ("sampler=40x3", ["sampler/40x3", "32x2", "64x1"])],
)
def test_unknown_group_option_lists_choices(compose_train, override, expected):
    with pytest.raises(MissingConfigException) as e:
        compose_train([override])
    assert all(text in str(e.value) for text in expected)


def test_unknown_norm_name_lists_choices(compose_train):
    with pytest.raises(ConfigCompositionException) as e:
        compose_train(["norm.name=gm"])
    message = f"{e.value} {e.value.__cause__}"
    assert "gm" in message and "bn, sync_bn, frozen_bn, gn, ln, in, none" in message


def test_wrong_type_is_rejected(compose_train):
    with pytest.raises(ConfigCompositionException) as e:
        compose_train(["sampler.num_frames=many"])
    assert "num_frames" in f"{e.value} {e.value.__cause__}"


def test_typo_key_is_rejected_with_valid_keys(compose_train):
    with pytest.raises(ConfigCompositionException):
        compose_train(["optim.epocs=3"])
    for override in ("optim.epocs=3", "+optim.epocs=3"):
        with pytest.raises(KeyError) as e:
            check_override_keys([override])
        message = e.value.args[0]
        assert "optim.epocs" in message and "Did you mean 'optim.epochs'" in message
        assert "base_lr" in message  # the valid keys are listed


def test_check_override_keys_accepts_valid_overrides():
    check_override_keys(
        [
            "norm=gn",
            "optim.epochs=3",
            "data.demo.params.num_videos=4",
            "hydra.run.dir=x",
            "trainer.precise_bn.num_batches=2",
            "+data.demo.params.extra=1",
        ]
    )


def test_cli_typo_exits_before_training():
    result = subprocess.run(
        [sys.executable, "-m", "videogn.cli.train", "trainer.log_perod=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Did you mean 'trainer.log_period'" in result.stderr


def test_a_moved_key_fails_naming_its_new_name():
    for override in ("optim.weight_decay_norm=true", "+optim.weight_decay_norm=true"):
        with pytest.raises(KeyError) as e:
            check_override_keys([override])
        message = e.value.args[0]
        assert "'optim.weight_decay_norm' has moved: use 'optim.norm_weight_decay'" in message
    result = subprocess.run(
        [sys.executable, "-m", "videogn.cli.train", "optim.weight_decay_norm=true"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "use 'optim.norm_weight_decay'" in result.stderr
