"""Training checkpoints that survive crashes: atomic files holding everything a resume needs.

A checkpoint is a dict saved with ``torch.save``:
``model`` (state dict of the bare model, so ``videogn.models.inflate.load_pretrained`` and
``videogn-test`` read it directly), ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (one
entry per rank), ``position`` (epoch, iteration within the epoch, global iteration, sampler
seed), ``config`` (the resolved run config) and ``meta``.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from videogn.utils.io import atomic_save

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d{8})\.pt$")


def checkpoint_path(run_dir: str | Path, global_iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{global_iteration:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run directory, oldest first (by global iteration in the name)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run directory.

    Raises:
        FileNotFoundError: naming the path and what was looked for.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(
                f"run directory {path} has no checkpoint ({CHECKPOINT_DIR}/iter_*.pt)"
            )
        return latest
    raise FileNotFoundError(f"checkpoint '{path}' is neither a file nor a run directory")


def save_checkpoint(state: dict, run_dir: str | Path, global_iteration: int, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``global_iteration``; keep the newest ``keep``."""
    path = checkpoint_path(run_dir, global_iteration)
    atomic_save(state, path)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on CPU; tensors are moved to devices by the objects that load them."""
    path = resolve_checkpoint(path)
    # weights_only=False: the checkpoint holds numpy RNG states and plain config dicts that we
    # wrote ourselves; never load checkpoints from untrusted sources.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a videogn training checkpoint (no 'model' entry)")
    return state


def capture_rng_state() -> dict:
    """Every random generator this process draws from (Python, NumPy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
