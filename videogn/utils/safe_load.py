"""Load weight files without running code they name.

A pickle says which functions to call to rebuild its objects, so unpickling a crafted
checkpoint or ImageNet file runs whatever its author chose. Two loaders admit only data:

- :func:`load_torch_file`: ``torch.load(weights_only=True)`` (tensors, containers, numbers,
  strings). videogn's own checkpoints hold nothing else (RNG states as lists and tensors,
  the config as plain containers).
- :func:`load_detectron_pickle`: Detectron's ``.pkl`` files (``detectron/utils/io.py``
  ``save_object``: a Python 2 pickle, protocol 2, of dicts of numpy arrays, names and
  numbers) through an unpickler that admits only numpy arrays, numpy scalars, their dtypes
  and ordered dicts, besides the containers and scalars pickle builds without a global.

A file that needs anything else is refused with :class:`UnsafeFileError`, whose message
names what it asked for and the one opt-in: the environment variable ``VIDEOGN_UNSAFE_LOAD=1``
(for a file you trust, e.g. a checkpoint written by videogn before the safe format). The
opt-in is an environment variable so that it reads the same for every entry point that
loads a file (``videogn-train`` resume and ``model.pretrained``, ``videogn-test``,
``videogn-predict``, ``videogn-inflate``, ``create_model(pretrained=...)``).
"""

from __future__ import annotations

import codecs
import collections
import importlib
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

UNSAFE_LOAD_ENV = "VIDEOGN_UNSAFE_LOAD"


class UnsafeFileError(ValueError):
    """A file that only loads by running code it names; the message names the opt-in."""


def unsafe_load_allowed() -> bool:
    """Whether the user opted in to full unpickling (``VIDEOGN_UNSAFE_LOAD=1``)."""
    return os.environ.get(UNSAFE_LOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def _refusal(path: Path, names: list[str]) -> UnsafeFileError:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return UnsafeFileError(
        f"{path}: refused to load: it names {shown}, which unpickling would call, and a "
        "pickle can run any code. If you trust this file (e.g. a checkpoint written by videogn "
        f"before the safe format), set {UNSAFE_LOAD_ENV}=1 to load it with full unpickling"
    )


def _unsafe_globals(path: Path, err: Exception) -> list[str]:
    """The globals of a torch.save file that the weights-only unpickler refuses."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch≥2.5
    if lister is not None:
        try:
            return list(lister(path))
        except Exception:  # a damaged pickle: report torch's own reason below
            pass
    reason = [line for line in str(err).splitlines() if "GLOBAL" in line]
    return [reason[-1].strip()] if reason else []


def load_torch_file(path: str | os.PathLike) -> object:
    """``torch.load`` on CPU with the weights-only unpickler.

    Raises:
        UnsafeFileError: the file names other globals and the opt-in is not set.
        pickle.UnpicklingError, RuntimeError: a damaged file (torch's own errors).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = _unsafe_globals(path, err)
        if not names:
            raise  # not a refused global: a damaged pickle
        if not unsafe_load_allowed():
            raise _refusal(path, names) from None
    logger.warning("%s=1: loading %s with full unpickling", UNSAFE_LOAD_ENV, path)
    return torch.load(path, map_location="cpu", weights_only=False)


def _multiarray():
    try:  # numpy >= 2 keeps the implementation in numpy._core (numpy.core is a shim)
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _multiarray()
# Everything a Detectron blob file names: numpy arrays (_reconstruct, ndarray, dtype) and
# scalars, under the module paths numpy 1 (numpy.core) and numpy 2 (numpy._core) pickle them;
# bytes of protocol-2 pickles written by Python 3 (_codecs.encode of a latin-1 string).
DETECTRON_GLOBALS: dict[tuple[str, str], object] = {
    **{(m, "_reconstruct"): _MULTIARRAY._reconstruct for m in ("numpy.core.multiarray",
                                                              "numpy._core.multiarray")},
    **{(m, "scalar"): _MULTIARRAY.scalar for m in ("numpy.core.multiarray",
                                                   "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,
}  # fmt: skip


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only :data:`DETECTRON_GLOBALS`; any other global stops the load."""

    def find_class(self, module: str, name: str):
        try:
            return DETECTRON_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def load_detectron_pickle(path: str | os.PathLike) -> object:
    """A Detectron / Caffe2 ``.pkl`` (Python 2 strings read as latin-1), arrays only.

    Raises:
        UnsafeFileError: the pickle names another global and the opt-in is not set.
        ValueError: the file is not a pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except _Refused as refused:
        if not unsafe_load_allowed():
            raise _refusal(path, [refused.name]) from None
    except (pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{path}: neither a torch.save file nor a pickle ({err})") from err
    logger.warning("%s=1: loading %s with full unpickling", UNSAFE_LOAD_ENV, path)
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")
