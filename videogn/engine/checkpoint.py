"""Training checkpoints that survive crashes: atomic files holding everything a resume needs.

A checkpoint is a dict saved with ``torch.save``:
``model`` (state dict of the bare model, so ``videogn.models.inflate.load_pretrained`` and
``videogn-test`` read it directly), ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (one
entry per rank), ``position`` (epoch, iteration within the epoch, global iteration, sampler
seed), ``config`` (the resolved run config) and ``meta``, all in types that
``torch.load(weights_only=True)`` accepts (tensors, plain containers, numbers, strings; the
NumPy RNG state as a list): loading a checkpoint never runs code it names. A file that needs
full unpickling (crafted, or written before this format) is refused with
:class:`UnsafeCheckpointError`, naming the opt-in ``VIDEOGN_UNSAFE_LOAD=1``.

A file is trusted only after it loads and holds the entries its use needs: auto-resume skips a
torn or foreign newest checkpoint (a full disk, a killed copy, a flaky network filesystem)
with a warning naming it and why, and falls back to the newest valid one.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from videogn.utils.io import atomic_save
from videogn.utils.safe_load import UnsafeFileError, load_torch_file

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d{8})\.pt$")
# What a training checkpoint must hold to resume from it (Trainer.state_dict's entries).
RESUME_ENTRIES = ("model", "optimizer", "scheduler", "scaler", "rng", "position", "config")
_SHOWN = 5  # differing keys named in a model mismatch message


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names each file and why."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that only loads by running code it names (crafted, or written before the
    safe format): refused, never skipped, so that the user decides (the message names the
    opt-in, ``VIDEOGN_UNSAFE_LOAD=1``)."""


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
        # Never the file just written: after a resume that skipped a torn later file, that
        # file sorts newest, and with keep=1 the valid checkpoint would go instead of it.
        for old in list_checkpoints(run_dir)[:-keep]:
            if old != path:
                try:
                    old.unlink(missing_ok=True)
                except OSError as err:  # the new file is whole: an old one left is harmless
                    logger.warning("could not delete the old checkpoint %s: %s", old, err)
    return path


def try_save_checkpoint(
    state: dict, run_dir: str | Path, global_iteration: int, keep: int
) -> Path | None:
    """:func:`save_checkpoint`, or None with a warning when the write fails.

    The policy for a full disk, an I/O error or a read-only directory: the previous
    checkpoints are never touched (the new file is written beside them and renamed into
    place only once whole; old ones are pruned only after that), the run warns and keeps
    training, and the next checkpoint (period, epoch end, stop) tries again.
    """
    try:
        return save_checkpoint(state, run_dir, global_iteration, keep)
    except OSError as err:
        code = errno.errorcode.get(err.errno, "") if err.errno else ""
        try:
            newest = latest_checkpoint(run_dir)
        except OSError:
            newest = None
        logger.warning(
            "checkpoint of iteration %d not written (%s%s); the previous checkpoints are "
            "untouched (newest: %s); training goes on and the next checkpoint tries again",
            global_iteration,
            f"{code}: " if code else "",
            err,
            newest or "none",
        )
        return None


def read_checkpoint_file(path: str | Path, required=("model",)) -> dict:
    """Load one checkpoint file on CPU after checking it is whole and holds ``required``.

    Raises:
        CheckpointError: naming the file and what is wrong with it (missing, empty, truncated,
            unloadable, or lacking entries).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0 or not zipfile.is_zipfile(path):
        # torch.save writes a zip whose directory sits at the end: a torn file has none.
        raise CheckpointError(
            f"{path}: not a complete torch.save file ({size} bytes, no zip directory at its "
            "end: truncated?)"
        )
    try:
        state = load_torch_file(path)  # weights only: loading never runs code the file names
    except UnsafeFileError as err:
        raise UnsafeCheckpointError(str(err)) from None
    except Exception as err:  # zip, pickle and storage errors all mean "unusable"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot be loaded ({reason})") from err
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a videogn training checkpoint (no {', '.join(map(repr, missing))} "
            f"{'entry' if len(missing) == 1 else 'entries'})"
        )
    return state


def newest_valid_checkpoint(run_dir: str | Path, required=RESUME_ENTRIES):
    """(path, state) of the newest checkpoint of ``run_dir`` that loads, or None if it has none.

    Every newer file that fails the check is skipped with a warning naming it and why.

    Raises:
        CheckpointError: the run has checkpoints but none is valid; lists each file and why.
    """
    problems = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = read_checkpoint_file(path, required)
        except UnsafeCheckpointError:
            raise  # not a torn file to fall back from: the user decides whether to trust it
        except CheckpointError as err:
            logger.warning("skipping checkpoint %s", err)
            problems.append(str(err))
            continue
        if problems:
            logger.warning("falling back to %s, the newest valid checkpoint", path)
        return path, state
    if problems:
        listing = "\n  ".join(problems)
        raise CheckpointError(
            f"no valid checkpoint in {Path(run_dir) / CHECKPOINT_DIR}:\n  {listing}\n"
            "(move them away, or pass trainer.resume=never, to start this run afresh)"
        )
    return None


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file, or the newest valid one of a run directory, on CPU.

    Tensors are moved to devices by the objects that load them.
    """
    return load_designated_checkpoint(path)[1]


def find_resume_checkpoint(resume: str, run_dir: str | Path):
    """The (path, state) that ``trainer.resume`` designates, verified, or None.

    Args:
        resume: "auto" (the newest valid checkpoint of ``run_dir``, None if it has none),
            "never", or a checkpoint file or run directory (an error if it holds none).
    """
    if resume == "never":
        if latest_checkpoint(run_dir) is not None:
            logger.warning("trainer.resume=never: ignoring the checkpoints in %s", run_dir)
        return None
    if resume == "auto":
        return newest_valid_checkpoint(run_dir)
    return load_designated_checkpoint(resume, RESUME_ENTRIES)


def load_designated_checkpoint(path: str | Path, required=("model",)) -> tuple[Path, dict]:
    """(path, state) of a named checkpoint file, or of a run directory's newest valid one
    (skipping torn newer files with a warning), loaded and checked to hold ``required``."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = newest_valid_checkpoint(path, required)
        if found is not None:
            return found
    path = resolve_checkpoint(path)  # FileNotFoundError naming what it looked for
    return path, read_checkpoint_file(path, required)


def check_model_state(model: torch.nn.Module, state: dict, source: str | Path) -> None:
    """Raise CheckpointError naming the keys and shapes in which ``state`` (a model state dict
    read from ``source``) differs from ``model``'s: a checkpoint of another model config."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k}: checkpoint {found[k]} vs model {expected[k]}"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    parts = []
    for what, items in (
        ("missing from the checkpoint", missing),
        ("not in the model", unexpected),
        ("of another shape", reshaped),
    ):
        if items:
            shown = "; ".join(items[:_SHOWN]) + ("; ..." if len(items) > _SHOWN else "")
            parts.append(
                f"{len(items)} {'entry' if len(items) == 1 else 'entries'} {what} ({shown})"
            )
    if parts:
        raise CheckpointError(
            f"{source} was written by a different model config: {', '.join(parts)}. Resume "
            "with the model and norm settings recorded in its config, or start afresh "
            "(trainer.resume=never or a new run directory)"
        )


def capture_rng_state() -> dict:
    """Every random generator this process draws from (Python, NumPy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),  # (version, tuple of ints, None): loads weights-only
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(tuple(state["python"]))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):  # _numpy_state's form; older checkpoints: numpy's tuple
        numpy_state = (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["key"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> dict:
    """NumPy's global generator state as plain values (its key array as a list of ints), which
    the weights-only loader accepts."""
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "bit_generator": bit_generator,
        "key": key.tolist(),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
