"""Fixtures shared by the whole suite.

``../shared`` (beside the checkout) holds real test videos and the Kinetics-400 class list. It
exists for developers and CI, not for users, so tests that need it skip with a reason.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("VIDEOGN_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores are shared by everything on the machine; keep test timing predictable.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent: real test videos are only beside a dev checkout/CI")
    return SHARED_DIR


@pytest.fixture(scope="session")
def shared_videos(shared_dir: Path) -> Path:
    videos = shared_dir / "videos"
    if not (videos / "MANIFEST.md").is_file():
        pytest.skip(f"{videos} has no MANIFEST.md: the real test videos are missing")
    return videos


# Run first in a child interpreter, it makes `import decord` fail as it does on a platform
# decord has no wheel for (a `sys.meta_path` finder refuses the name): no mock of the backend.
WITHOUT_DECORD = textwrap.dedent(
    """
    import sys

    class _DecordNotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "decord":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.modules.pop("decord", None)
    sys.meta_path.insert(0, _DecordNotInstalled())
    """
)


@pytest.fixture(scope="session")
def without_decord() -> str:
    """Python source to prepend to a child's code so that decord is not installed there."""
    return WITHOUT_DECORD


@pytest.fixture
def run_on_two_ranks(tmp_path):
    """``run(target)`` starts ``target(rank, 2, init_file, queue)`` in two spawned processes
    (a real gloo pair rendezvousing through a file) and returns ``{rank: value}`` of the
    ``(rank, value)`` pairs they put on the queue; each must exit 0."""

    def run(target) -> dict:
        context = mp.get_context("spawn")
        queue = context.Queue()
        init_file = str(tmp_path / "rendezvous")
        processes = [
            context.Process(target=target, args=(rank, 2, init_file, queue)) for rank in range(2)
        ]
        for process in processes:
            process.start()
        results = dict(queue.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        return results

    return run
