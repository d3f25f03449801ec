"""Read pretrained ResNet weights from disk, keyed by the I3D's own parameter names.

Three layouts are understood; :data:`MODULE_TABLE` is the one mapping between them:

- **torchvision**: a 2D ResNet state dict (``conv1.weight``, ``bn1.*``, ``layerX.Y.convN``,
  ``layerX.Y.downsample.0/1``, ``fc``), with BatchNorm or, same keys, GroupNorm.
- **detectron**: a Detectron / Caffe2 pickle, a dict of numpy arrays (possibly under
  ``blobs``) written by Python 2. Blob names come from ``detectron/modeling/ResNet.py``:
  ``conv1_w``, ``res_conv1_bn_{s,b}`` (BN stem) or ``conv1_gn_{s,b}`` (GN stem),
  ``res{s}_{i}_branch2{a,b,c}_w`` with ``_bn_*`` / ``_gn_*``, shortcut ``res{s}_{i}_branch1*``,
  classifier ``pred_{w,b}``. ``_riv`` holds the running *variance* despite its name (Caffe2's
  ``brew.spatial_bn`` passes it in the variance slot). Detectron's BN models usually carry
  only ``_s/_b``: the statistics are folded into that affine ("AffineChannel").
- **videogn**: an inflated or training checkpoint of this package (state dict under ``model``).
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from videogn.models.i3d import ResNet3D
from videogn.models.pretrained_sources import resolve_pretrained
from videogn.utils.safe_load import load_detectron_pickle, load_torch_file

logger = logging.getLogger(__name__)

# The I3D's declared first conv and classifier (ResNet3D.pretrained_cfg).
FIRST_CONV = ResNet3D.pretrained_cfg["first_conv"]
CLASSIFIER = ResNet3D.pretrained_cfg["classifier"]
# One row per module. {s}: stage 2..5 (res2..res5); {l}: torchvision layer = s - 1;
# {i}: block index; {norm}: "bn" or "gn". Detectron alternatives are separated by "|".
# fmt: off
MODULE_TABLE: tuple[tuple[str, str, str, str], ...] = (
    # kind  videogn (I3D)            torchvision                   Detectron blob prefix
    ("conv", FIRST_CONV,             "conv1",                      "conv1"),
    ("norm", "stem.norm",            "bn1",                        "res_conv1_bn|conv1_gn"),
    ("conv", "res{s}.{i}.conv_a",    "layer{l}.{i}.conv1",         "res{s}_{i}_branch2a"),
    ("norm", "res{s}.{i}.norm_a",    "layer{l}.{i}.bn1",           "res{s}_{i}_branch2a_{norm}"),
    ("conv", "res{s}.{i}.conv_b",    "layer{l}.{i}.conv2",         "res{s}_{i}_branch2b"),
    ("norm", "res{s}.{i}.norm_b",    "layer{l}.{i}.bn2",           "res{s}_{i}_branch2b_{norm}"),
    ("conv", "res{s}.{i}.conv_c",    "layer{l}.{i}.conv3",         "res{s}_{i}_branch2c"),
    ("norm", "res{s}.{i}.norm_c",    "layer{l}.{i}.bn3",           "res{s}_{i}_branch2c_{norm}"),
    ("conv", "res{s}.{i}.proj_conv", "layer{l}.{i}.downsample.0",  "res{s}_{i}_branch1"),
    ("norm", "res{s}.{i}.proj_norm", "layer{l}.{i}.downsample.1",  "res{s}_{i}_branch1_{norm}"),
    ("fc",   CLASSIFIER,             "fc",                         "pred"),
)
# fmt: on
# Parameter names per module kind: PyTorch attribute -> Detectron blob suffix.
PARAM_SUFFIXES: dict[str, dict[str, str]] = {
    "conv": {"weight": "_w"},
    "norm": {"weight": "_s", "bias": "_b", "running_mean": "_rm", "running_var": "_riv"},
    "fc": {"weight": "_w", "bias": "_b"},
}
# Entries that are not weights: optimizer state, step counters, learning rate.
BOOKKEEPING = re.compile(r"(_momentum$|num_batches_tracked$|^lr$|^model_iter$|^iter$)")

# How each layout's pretraining fed images; recorded in inflated checkpoints, never applied.
INPUT_PRESETS: dict[str, dict] = {
    "torchvision": {
        "channel_order": "RGB",
        "pixel_range": 1.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
    # Detectron's PIXEL_MEANS (BGR, 0-255, no std division: PIXEL_STD = 1).
    "detectron": {
        "channel_order": "BGR",
        "pixel_range": 255.0,
        "mean": [102.9801, 115.9465, 122.7717],
        "std": [1.0, 1.0, 1.0],
    },
}


@dataclass
class SourceCheckpoint:
    """Weights of one file, renamed to I3D keys (2D conv kernels stay 4D)."""

    path: str
    layout: str  # "torchvision" | "detectron" | "videogn"
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    file_names: dict[str, str] = field(default_factory=dict)  # I3D key -> key in the file
    norm_kinds: dict[str, str] = field(default_factory=dict)  # I3D module -> bn|affine_bn|gn
    unmapped: list[str] = field(default_factory=list)  # file keys no table row names
    ignored: list[str] = field(default_factory=list)  # bookkeeping entries
    input_preset: dict | None = None
    meta: dict = field(default_factory=dict)  # what a videogn checkpoint carried besides weights

    def file_name(self, key: str) -> str:
        return self.file_names.get(key, key)


def _template_regex(template: str) -> str:
    pattern = re.escape(template)
    for name, group in (("s", r"\d+"), ("l", r"\d+"), ("i", r"\d+"), ("norm", "bn|gn")):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return pattern


def _compile_rows(column: int) -> list[tuple[str, str, re.Pattern]]:
    rows = []
    for row in MODULE_TABLE:
        kind, videogn_name = row[0], row[1]
        alternatives = "|".join(_template_regex(t) for t in row[column].split("|"))
        if column == 3:  # Detectron: prefix + suffix
            suffixes = "|".join(PARAM_SUFFIXES[kind].values())
            regex = rf"^(?P<module>{alternatives})(?P<param>{suffixes})$"
        else:
            params = "|".join(PARAM_SUFFIXES[kind])
            regex = rf"^(?P<module>{alternatives})\.(?P<param>{params})$"
        rows.append((kind, videogn_name, re.compile(regex)))
    return rows


_ROWS = {
    "videogn": _compile_rows(1),
    "torchvision": _compile_rows(2),
    "detectron": _compile_rows(3),
}


def map_key(key: str, layout: str) -> tuple[str, str, str] | None:
    """Name a file key in I3D terms: (kind, I3D module name, parameter) or None if unknown.

    >>> map_key("res3_0_branch1_gn_s", "detectron")
    ('norm', 'res3.0.proj_norm', 'weight')
    """
    for kind, videogn_name, regex in _ROWS[layout]:
        match = regex.match(key)
        if match is None:
            continue
        found = match.groupdict()
        stage = int(found["l"]) + 1 if found.get("l") is not None else found.get("s")
        module = videogn_name.format(s=stage, i=found.get("i"))
        param = found["param"]
        if layout == "detectron":
            param = next(p for p, sfx in PARAM_SUFFIXES[kind].items() if sfx == param)
        return kind, module, param
    return None


def _load_file(path: Path) -> object:
    """The file's objects, unpickled without running code it names (videogn.utils.safe_load):
    a file that needs more is refused with UnsafeFileError, naming the opt-in."""
    if zipfile.is_zipfile(path):  # torch.save's format since PyTorch 1.6
        return load_torch_file(path)
    return load_detectron_pickle(path)  # Detectron and Caffe2 pickles, from Python 2


def _guess_layout(keys: list[str]) -> str | None:
    if f"{FIRST_CONV}.weight" in keys:
        return "videogn"
    if "conv1.weight" in keys or any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    if "conv1_w" in keys or any(re.match(r"^res\d+_\d+_branch", k) for k in keys):
        return "detectron"
    return None


def _unwrap(obj: object, path: Path) -> tuple[Mapping, dict]:
    """The weight mapping inside a loaded file, and the other top-level entries."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict of weights, got {type(obj).__name__}")
    for wrapper in ("blobs", "model", "state_dict"):
        if isinstance(obj.get(wrapper), Mapping):
            rest = {k: v for k, v in obj.items() if k != wrapper}
            return obj[wrapper], rest
    return obj, {}


def _as_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu" and value.ndim > 0:
        return torch.from_numpy(np.ascontiguousarray(value))
    return None


def _strip_module_prefix(weights: Mapping) -> dict:
    keys = list(weights)
    if keys and all(str(k).startswith("module.") for k in keys):  # saved from DDP
        return {str(k)[len("module.") :]: v for k, v in weights.items()}
    return {str(k): v for k, v in weights.items()}


def read_checkpoint(path: str | Path) -> SourceCheckpoint:
    """Load ``path`` (torch.save file or pickle) and rename its weights to I3D keys.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no ResNet weights of a known layout.
    """
    path = Path(resolve_pretrained(path)).expanduser()  # a named source: its cached file
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint '{path}' does not exist")
    weights, rest = _unwrap(_load_file(path), path)
    weights = _strip_module_prefix(weights)
    layout = _guess_layout(list(weights))
    if layout is None:
        sample = ", ".join(list(weights)[:6]) or "(empty)"
        raise ValueError(
            f"{path}: no ResNet weights of a known layout (torchvision 'conv1.weight', "
            f"Detectron 'conv1_w', videogn '{FIRST_CONV}.weight'); first keys: {sample}"
        )
    source = SourceCheckpoint(path=str(path), layout=layout)
    for key, value in weights.items():
        tensor = _as_tensor(value)
        if BOOKKEEPING.search(key) or tensor is None:
            source.ignored.append(key)
            continue
        mapped = map_key(key, layout)
        if mapped is None:
            if layout == "videogn":  # already I3D names: layers the table does not list
                source.tensors[key] = tensor
            else:
                source.unmapped.append(key)
            continue
        kind, module, param = mapped
        target_key = f"{module}.{param}"
        if kind == "fc" and tensor.dim() == 4:  # Caffe2 may store fc as a 1x1 conv
            tensor = tensor.flatten(1)
        source.tensors[target_key] = tensor
        source.file_names[target_key] = key
    source.norm_kinds = _norm_kinds(source, weights)
    source.input_preset = _input_preset(layout, rest)
    source.meta = {k: v for k, v in rest.items() if k in ("inflation", "meta", "format")}
    return source


def _norm_kinds(source: SourceCheckpoint, weights: Mapping) -> dict[str, str]:
    """bn (with statistics), affine_bn (statistics folded into the affine) or gn, per module."""
    kinds: dict[str, str] = {}
    for key in source.tensors:
        mapped = map_key(key, "videogn")
        if mapped is None or mapped[0] != "norm" or mapped[1] in kinds:
            continue
        module = mapped[1]
        has_stats = f"{module}.running_mean" in source.tensors
        file_key = source.file_name(key)
        if source.layout == "detectron" and "_gn_" not in file_key:
            kinds[module] = "bn" if has_stats else "affine_bn"
        elif source.layout == "detectron":
            kinds[module] = "gn"
        else:
            kinds[module] = "bn" if has_stats else "gn"
    return kinds


def _input_preset(layout: str, rest: dict) -> dict | None:
    meta = rest.get("meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("input"), Mapping):
        return dict(meta["input"])
    return dict(INPUT_PRESETS[layout]) if layout in INPUT_PRESETS else None
