"""pyproject's requirements install on every platform a cluster has: decord only where it
publishes wheels (x86-64 Linux and Windows), PyAV everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# packaging's marker environments of the platforms videogn is installed on
PLATFORMS = {
    "x86-64 Linux": dict(platform_system="Linux", platform_machine="x86_64", sys_platform="linux"),
    "aarch64 Linux (Grace-Hopper)": dict(
        platform_system="Linux", platform_machine="aarch64", sys_platform="linux"
    ),
    "Apple silicon": dict(
        platform_system="Darwin", platform_machine="arm64", sys_platform="darwin"
    ),
    "Intel macOS": dict(platform_system="Darwin", platform_machine="x86_64", sys_platform="darwin"),
    "Windows x64": dict(platform_system="Windows", platform_machine="AMD64", sys_platform="win32"),
}
# decord 0.6.0's wheels on PyPI: manylinux2010_x86_64 and win_amd64 (pip download, see README)
DECORD_WHEELS = {"x86-64 Linux", "Windows x64"}


def _requirements() -> dict[str, Requirement]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(line).name: Requirement(line) for line in dependencies}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_decord_is_required_exactly_where_it_has_wheels(platform):
    decord = _requirements()["decord"]
    assert decord.marker is not None
    assert decord.marker.evaluate(PLATFORMS[platform]) == (platform in DECORD_WHEELS)


def test_pyav_and_the_rest_are_required_everywhere():
    unconditional = {name for name, req in _requirements().items() if req.marker is None}
    assert {"av", "torch", "hydra-core", "omegaconf"} <= unconditional
