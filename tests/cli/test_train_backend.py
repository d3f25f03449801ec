"""`videogn-train data.backend=decord` on a machine without decord: the run stops before
training with the install hint as the error's last line (decord has no wheels for ARM Linux
or Apple silicon, so pyproject installs it only where it has)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

HIDE_DECORD = textwrap.dedent(
    """
    import runpy, sys

    class _DecordNotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "decord":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.modules.pop("decord", None)
    sys.meta_path.insert(0, _DecordNotInstalled())
    sys.argv = ["videogn-train", *sys.argv[1:]]
    runpy.run_module("videogn.cli.train", run_name="__main__")
    """
)


def test_train_without_decord_names_the_fix(tmp_path):
    demo = {
        "train_videos_per_class": 1,
        "val_videos_per_class": 1,
        "frames_per_video": 24,
        "frame_size": 32,
        "event_gap": 8,
        "event_length": 2,
    }
    overrides = [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.demo.cache_dir={tmp_path / 'demo'}",
        *(f"data.demo.params.{key}={value}" for key, value in demo.items()),
        "data.num_classes=4",
        "data.num_workers=0",
        "data.backend=decord",
    ]
    child = subprocess.run(
        [sys.executable, "-c", HIDE_DECORD, *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode != 0
    errors = [line for line in child.stderr.splitlines() if "Error:" in line]
    assert errors[-1].endswith(
        "BackendNotInstalledError: decord is not installed (it ships wheels for x86-64 "
        "Linux/Windows only); pip install decord, or use the pyav backend (data.backend=pyav)"
    ), child.stderr[-2000:]
    assert (tmp_path / "run" / "config.yaml").is_file()  # the run started ...
    assert not list((tmp_path / "run").rglob("*.pt"))  # ... and stopped before any training
