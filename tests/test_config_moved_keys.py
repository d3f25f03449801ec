"""A key that has moved (``videogn.config.MOVED_KEYS``) inside an experiment file, or a file it
builds on, is an error naming the file and the new key, as it is on the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from videogn.config import CONFIG_DIR, check_experiment_keys, exit_on_bad_overrides


@pytest.fixture
def config_dir(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "experiment" / "old").mkdir()
    (conf / "experiment" / "old_base.yaml").write_text(
        "# @package _global_\noptim:\n  weight_decay_norm: true\n"
    )
    (conf / "experiment" / "old" / "cell.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/old_base\n  - override /norm: gn\n"
        "data:\n  batch_size: 4\n"
    )
    return conf


def test_a_moved_key_in_an_experiment_file_names_the_new_key(config_dir):
    with pytest.raises(KeyError, match="old_base.yaml: config key 'optim.weight_decay_norm' "
                       "has moved: use 'optim.norm_weight_decay'"):  # fmt: skip
        check_experiment_keys(["experiment=old/cell"], str(config_dir))
    check_experiment_keys(["experiment=table8/gn_32x2_bs8"], str(config_dir))  # current: fine


def test_the_entry_point_exits_2_with_the_message(config_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        exit_on_bad_overrides(["experiment=old_base"], "train", str(config_dir))
    assert stop.value.code == 2
    assert "use 'optim.norm_weight_decay'" in capsys.readouterr().err


def test_every_shipped_experiment_passes(tmp_path):
    # videogn-train runs the check on the real conf/ before hydra composes anything
    command = [sys.executable, "-m", "videogn.cli.train", "experiment=kinetics400_i3d_gn"]
    done = subprocess.run(
        [*command, "--cfg", "job"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "norm_weight_decay" in done.stdout
