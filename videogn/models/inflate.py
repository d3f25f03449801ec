"""Inflate 2D ImageNet ResNets into the I3D, and load pretrained weights into a model.

Every t x k x k conv of the I3D receives its 2D k x k kernel:

- ``mean``: the kernel repeated over the t slices and divided by t (I3D's rule), so a video of
  identical frames gives the 2D response wherever all t taps read real frames;
- ``center``: the kernel in slice t // 2, zeros elsewhere, so every frame of such a video gives
  exactly the 2D response (docs/INFLATION.md derives both statements).

Norm weights and statistics copy unchanged. :func:`load_pretrained` also reads videogn
checkpoints (inflated or from training) and then copies tensors as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from videogn.models.checkpoint_sources import SourceCheckpoint, read_checkpoint
from videogn.models.i3d import ResNet3D
from videogn.models.norm import norm_kind

logger = logging.getLogger(__name__)

INFLATION_MODES = ("mean", "center")
NORM_MISMATCH_POLICIES = ("refuse", "affine_only")
CHECKPOINT_FORMAT = "videogn.inflated/1"
# Norm kinds of the model (videogn.models.norm.norm_kind) and of a file, by family.
_FAMILY = {"bn": "bn", "frozen_bn": "bn", "affine_bn": "bn", "gn": "gn", "none": "none"}


def inflate_conv_weight(weight: torch.Tensor, temporal_kernel: int, mode: str) -> torch.Tensor:
    """[O, I, kh, kw] -> [O, I, t, kh, kw] by ``mode`` ("mean" or "center")."""
    if mode == "mean":
        return weight.unsqueeze(2).repeat(1, 1, temporal_kernel, 1, 1) / temporal_kernel
    if mode == "center":
        inflated = weight.new_zeros(*weight.shape[:2], temporal_kernel, *weight.shape[2:])
        # Slice t // 2 sits on the output frame's own input frame, given padding t // 2.
        inflated[:, :, temporal_kernel // 2] = weight
        return inflated
    raise ValueError(f"unknown inflation mode '{mode}'; valid modes: {', '.join(INFLATION_MODES)}")


@dataclass
class InflationReport:
    """What :func:`load_pretrained` did with every tensor of the file and of the model."""

    source: str
    layout: str
    mode: str
    norm_mismatch: str
    flip_input_channels: bool = False
    filled: dict[str, str] = field(default_factory=dict)  # model key -> what was done
    unused_source: list[str] = field(default_factory=list)  # file keys nothing took
    unfilled_target: list[str] = field(default_factory=list)  # model keys nothing filled
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (file key, why)
    left_at_init: list[tuple[str, str]] = field(default_factory=list)  # (model key, why)
    ignored: list[str] = field(default_factory=list)  # optimizer state, counters
    classifier: str = "absent from the checkpoint"
    source_sha256: str | None = None

    @property
    def complete(self) -> bool:
        """Every file tensor was used and every model tensor filled (classifier aside)."""
        return not self.unused_source and not self.unfilled_target

    def summary(self) -> dict:
        """Plain-data record stored inside inflated checkpoints."""
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "layout": self.layout,
            "mode": self.mode,
            "norm_mismatch": self.norm_mismatch,
            "flip_input_channels": self.flip_input_channels,
            "classifier": self.classifier,
            "filled": len(self.filled),
            "unused_source": list(self.unused_source),
            "unfilled_target": list(self.unfilled_target),
            "dropped": [list(d) for d in self.dropped],
            "left_at_init": [list(d) for d in self.left_at_init],
        }

    def table(self) -> str:
        """Summary counts, then one row per tensor that was not simply loaded."""
        lines = [
            f"pretrained weights: {self.source} ({self.layout}, mode={self.mode}, "
            f"norm_mismatch={self.norm_mismatch})",
            f"  filled model tensors      {len(self.filled):6d}",
            f"  unused file tensors       {len(self.unused_source):6d}",
            f"  unfilled model tensors    {len(self.unfilled_target):6d}",
            f"  dropped file tensors      {len(self.dropped):6d}",
            f"  model tensors left at init{len(self.left_at_init):6d}",
            f"  ignored bookkeeping       {len(self.ignored):6d}  (momentum, counters, lr)",
            f"  classifier: {self.classifier}",
        ]
        rows = [("unused", k, "no tensor of the model takes it") for k in self.unused_source]
        rows += [("unfilled", k, "nothing in the file fills it") for k in self.unfilled_target]
        rows += [("dropped", k, why) for k, why in self.dropped]
        rows += [("left at init", k, why) for k, why in self.left_at_init]
        if rows:
            width = max(len(r[1]) for r in rows)
            lines.append(f"  {'status':<13} {'tensor':<{width}}  reason")
            lines += [f"  {s:<13} {k:<{width}}  {why}" for s, k, why in rows]
        return "\n".join(lines)


def _model_norm_kinds(model: nn.Module, source: SourceCheckpoint) -> list[tuple[str, str]]:
    """(module, model norm kind) for every norm of the file, in the model's layer order."""
    modules = dict(model.named_modules())
    return [(name, norm_kind(modules[name])) for name in modules if name in source.norm_kinds]


def check_norms(model: nn.Module, source: SourceCheckpoint, norm_mismatch: str) -> list[str]:
    """Modules whose norm family (BN vs GN) differs between file and model.

    Raises:
        ValueError: on the first mismatch when ``norm_mismatch == "refuse"``.
    """
    if norm_mismatch not in NORM_MISMATCH_POLICIES:
        raise ValueError(
            f"unknown norm_mismatch '{norm_mismatch}'; valid: {', '.join(NORM_MISMATCH_POLICIES)}"
        )
    mismatched = []
    for module, model_kind in _model_norm_kinds(model, source):
        file_kind = source.norm_kinds[module]
        if _FAMILY[file_kind] == _FAMILY[model_kind]:
            continue
        if norm_mismatch == "refuse":
            file_key = source.file_name(f"{module}.weight")
            raise ValueError(
                f"norm mismatch at {module}: {source.path} has {file_kind} there "
                f"('{file_key}') but the model has {model_kind}; pass "
                f"norm_mismatch='affine_only' (--norm-mismatch affine_only) to copy only the "
                f"affine gamma/beta, or build the model with the checkpoint's norm"
            )
        mismatched.append(module)
    return mismatched


def adapted_parts(model: nn.Module) -> tuple[str, str]:
    """The model's declared first conv and classifier (``pretrained_cfg``, as in timm).

    Raises:
        ValueError: the model declares none, or names a module it does not have.
    """
    declared = getattr(model, "pretrained_cfg", None) or {}
    names = (declared.get("first_conv"), declared.get("classifier"))
    if None in names:
        raise ValueError(
            f"{type(model).__name__} has no pretrained_cfg naming 'first_conv' and "
            f"'classifier' (ResNet3D declares {dict(ResNet3D.pretrained_cfg)})"
        )
    modules = dict(model.named_modules())
    for role, name in zip(("first_conv", "classifier"), names, strict=True):
        if name not in modules:
            raise ValueError(
                f"{type(model).__name__}.pretrained_cfg['{role}'] = '{name}' is not a module "
                "of the model"
            )
    return names


def _inflate_conv(key: str, tensor: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    kept = target.shape[:2] + target.shape[3:]
    if tensor.shape != kept:
        raise ValueError(
            f"{key}: 2D kernel {tuple(tensor.shape)} does not fit the model's "
            f"{tuple(target.shape)} (a different ResNet width or depth?)"
        )
    return inflate_conv_weight(tensor, target.shape[2], mode)


class _Inflater:
    """Builds the model's new state dict from a source; fills the report as it goes."""

    def __init__(
        self,
        model: nn.Module,
        source: SourceCheckpoint,
        report: InflationReport,
        mode: str,
        mismatched: list[str],
    ):
        self.source, self.report, self.mode = source, report, mode
        self.target = model.state_dict()
        self.modules = dict(model.named_modules())
        self.mismatched = set(mismatched)
        self.first_conv, self.classifier = adapted_parts(model)
        self.state: dict[str, torch.Tensor] = {}

    def run(self) -> dict[str, torch.Tensor]:
        self._load_classifier()
        for key, tensor in self.source.tensors.items():
            module = key.rpartition(".")[0]
            if module == self.classifier:
                continue
            if module in self.source.norm_kinds:
                self._load_norm_param(module, key, tensor)
            elif key not in self.target:
                self.report.unused_source.append(self.source.file_name(key))
            elif tensor.dim() == 4 and isinstance(self.modules.get(module), nn.Conv3d):
                # In the model's dtype, so that t * (w / t) rounds back to w as well as it can.
                tensor = tensor.to(self.target[key].dtype)
                inflated = _inflate_conv(key, tensor, self.target[key], self.mode)
                self._put(key, inflated, f"inflated ({self.mode})")
            else:  # already 3D (videogn checkpoints)
                self._put(key, tensor, "copied")
        self._fold_affine_statistics()
        self._collect_unfilled()
        return self.state

    def _put(self, key: str, tensor: torch.Tensor, how: str) -> None:
        target = self.target[key]
        if key == f"{self.first_conv}.weight" and self.report.flip_input_channels:
            tensor, how = tensor.flip(1), how + ", input channels reversed"
        if tensor.shape != target.shape:
            raise ValueError(
                f"{self.source.file_name(key)}: shape {tuple(tensor.shape)} does "
                f"not fit the model's {key} {tuple(target.shape)}"
            )
        self.state[key] = tensor.to(dtype=target.dtype)
        self.report.filled[key] = f"{self.source.file_name(key)}: {how}"

    def _load_norm_param(self, module: str, key: str, tensor: torch.Tensor) -> None:
        if module not in self.modules or (module not in self.mismatched and key not in self.target):
            self.report.unused_source.append(self.source.file_name(key))
        elif module not in self.mismatched:
            self._put(key, tensor, "copied")
        elif key.endswith((".weight", ".bias")) and key in self.target:
            self._put(key, tensor, "affine only (norm mismatch)")
        else:
            why = f"{self.source.norm_kinds[module]} -> {norm_kind(self.modules[module])}"
            self.report.dropped.append((self.source.file_name(key), f"norm mismatch ({why})"))

    def _fold_affine_statistics(self) -> None:
        # Detectron's BN files keep only the folded affine y = s x + b. BN in eval computes
        # s (x - mean) / sqrt(var + eps) + b, which equals it for mean 0 and var 1 - eps.
        for module, kind in self.source.norm_kinds.items():
            if kind != "affine_bn" or module in self.mismatched or module not in self.modules:
                continue
            eps = getattr(self.modules[module], "eps", 0.0)
            for stat, value in (("running_mean", 0.0), ("running_var", 1.0 - eps)):
                key = f"{module}.{stat}"
                if key in self.target:
                    self.state[key] = torch.full_like(self.target[key], value)
                    self.report.filled[key] = f"{value:g} (statistics folded into the affine)"

    def _load_classifier(self) -> None:
        keys = [f"{self.classifier}.weight", f"{self.classifier}.bias"]
        present = [k for k in keys if k in self.source.tensors]
        if not present:
            self.report.left_at_init += [(k, "no classifier in the checkpoint") for k in keys]
            return
        shapes = {k: tuple(self.source.tensors[k].shape) for k in present}
        if len(present) == 2 and all(shapes[k] == tuple(self.target[k].shape) for k in keys):
            for k in keys:
                self._put(k, self.source.tensors[k], "copied")
            self.report.classifier = f"kept ({shapes[keys[0]][0]} classes)"
            return
        names = [self.source.file_name(k) for k in present]
        file_classes = shapes[present[0]][0]
        model_classes = self.target[keys[0]].shape[0]
        self.report.classifier = f"dropped ({file_classes} -> {model_classes} classes)"
        why = f"classifier has {file_classes} classes, the model {model_classes}"
        self.report.dropped += [(n, why) for n in names]
        self.report.left_at_init += [(k, "fresh classifier") for k in keys]
        logger.info(
            "classifier dropped: %s hold %d classes, the model has %d; %s keeps its initialization",
            "/".join(names),
            file_classes,
            model_classes,
            self.classifier,
        )

    def _collect_unfilled(self) -> None:
        left = {k for k, _ in self.report.left_at_init}
        for key in self.target:
            if key in self.state or key in left or key.endswith("num_batches_tracked"):
                continue
            module = key.rpartition(".")[0]
            if module in self.mismatched:
                self.report.left_at_init.append((key, "norm mismatch: no counterpart"))
            else:
                self.report.unfilled_target.append(key)


def inflate_state_dict(
    model: nn.Module,
    source: SourceCheckpoint,
    *,
    mode: str = "mean",
    norm_mismatch: str = "refuse",
    flip_input_channels: bool = False,
) -> tuple[dict[str, torch.Tensor], InflationReport]:
    """The part of ``model``'s state dict that ``source`` provides, and the report."""
    if mode not in INFLATION_MODES:
        raise ValueError(f"unknown inflation mode '{mode}'; valid: {', '.join(INFLATION_MODES)}")
    mode_label = "none (already 3D)" if source.layout == "videogn" else mode
    report = InflationReport(
        source.path,
        source.layout,
        mode_label,
        norm_mismatch,
        flip_input_channels,
        ignored=list(source.ignored),
    )
    report.unused_source += source.unmapped
    mismatched = check_norms(model, source, norm_mismatch)
    if mismatched:
        logger.warning(
            "norm mismatch in %d layers (first: %s): copied affine gamma/beta only",
            len(mismatched),
            mismatched[0],
        )
    return _Inflater(model, source, report, mode, mismatched).run(), report


def load_pretrained(
    model: nn.Module,
    path: str | Path | SourceCheckpoint,
    *,
    mode: str = "mean",
    norm_mismatch: str = "refuse",
    strict: bool = False,
    flip_input_channels: bool = False,
) -> InflationReport:
    """Fill ``model`` from a 2D ResNet (inflated on the fly) or a videogn checkpoint.

    Args:
        model: a :class:`videogn.models.i3d.ResNet3D`.
        path: torchvision ``.pth``/``.pt``, Detectron ``.pkl``, or videogn checkpoint
            (or an already read :class:`SourceCheckpoint`).
        mode: "mean" or "center"; how 2D kernels become 3D (ignored for 3D checkpoints).
        norm_mismatch: "refuse" (error naming the first BN/GN mismatch) or "affine_only"
            (copy gamma/beta there, drop statistics, log it).
        strict: raise when a backbone tensor of the file goes unused or one of the model
            stays unfilled. The classifier follows its own rule: kept when its shape matches,
            otherwise left at initialization with a log line.
        flip_input_channels: reverse conv1's input channels (BGR-trained <-> RGB input).

    Returns:
        the :class:`InflationReport`; its ``table()`` is logged.
    """
    source = path if isinstance(path, SourceCheckpoint) else read_checkpoint(path)
    state, report = inflate_state_dict(
        model,
        source,
        mode=mode,
        norm_mismatch=norm_mismatch,
        flip_input_channels=flip_input_channels,
    )
    if strict and not report.complete:
        raise ValueError(f"strict loading failed:\n{report.table()}")
    incompatible = model.load_state_dict(state, strict=False)
    assert not incompatible.unexpected_keys, incompatible.unexpected_keys
    logger.info("%s", report.table())
    return report


def save_inflated(
    model: nn.Module,
    path: str | Path,
    report: InflationReport,
    *,
    input_preset: dict | None = None,
    model_config: dict | None = None,
) -> Path:
    """Write ``model``'s weights with the inflation record, atomically (temp, fsync, rename).

    The file is a dict: ``format`` (:data:`CHECKPOINT_FORMAT`), ``model`` (state dict),
    ``inflation`` (:meth:`InflationReport.summary`), ``meta`` (``input``: how the source was
    pretrained to see pixels; ``model_config``: what builds the matching model).
    """
    from videogn.utils.io import atomic_save

    path = Path(path).expanduser()
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "inflation": report.summary(),
        "meta": {"input": input_preset, "model_config": model_config or {}},
    }
    atomic_save(checkpoint, path)
    return path
