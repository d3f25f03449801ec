"""Structured-config schemas of ``videogn-train`` and ``videogn-test``.

The dataclasses here are registered in hydra's ConfigStore and are the base of
``conf/train.yaml`` and ``conf/test.yaml``. Hydra merges every YAML file and every command
line override onto them, so a misspelled key, a value of the wrong type, or an unknown norm,
model, backend or aggregation fails at compose time with the key and the valid choices.
Unknown group options (``sampler=40x3``, ``norm=gm``) are rejected by hydra itself, which lists
the files of the group. Nothing outside the builders (:mod:`videogn.engine.builders`) reads
these objects.
"""

from __future__ import annotations

import copy
import difflib
import enum
import logging
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from videogn.data.decoders import BACKENDS
from videogn.models.factory import MODELS
from videogn.models.norm import GN_DEFAULT_GROUPS, NORM_BUILDERS

logger = logging.getLogger(__name__)

# conf/ sits beside the package in the repository (an editable install finds it there).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Enums built from the registries, so the schema never drifts from what the code accepts.
# OmegaConf validates enum fields by member name and lists the names when a value is unknown.
NormName = enum.Enum("NormName", {name: name for name in NORM_BUILDERS})
ModelName = enum.Enum("ModelName", {name: name for name in MODELS})
Backend = enum.Enum("Backend", {name: name for name in BACKENDS})
ShortVideo = enum.Enum("ShortVideo", {"loop": "loop", "repeat_last": "repeat_last"})
Aggregation = enum.Enum("Aggregation", {"mean": "mean", "sum": "sum", "max": "max"})
OutputDtype = enum.Enum("OutputDtype", {"uint8": "uint8", "float32": "float32"})
TestHeadName = enum.Enum("TestHeadName", {"pooled": "pooled", "fully_conv": "fully_conv"})
ClipPositions = enum.Enum("ClipPositions", {"centered": "centered", "nonlocal": "nonlocal"})
AmpMode = enum.Enum("AmpMode", {"none": "none", "bf16": "bf16", "fp16": "fp16"})
DataSource = enum.Enum("DataSource", {"demo": "demo", "lists": "lists"})


@dataclass
class ModelConfig:
    """Arguments of :func:`videogn.models.factory.create_model`."""

    name: ModelName = ModelName["i3d_r50"]
    num_classes: int = II("data.num_classes")
    # A path, a named source (torchvision:resnet50, detectron:R-50-GN), or none (scratch).
    pretrained: str | None = None
    # Refuse to train when pretrained resolves to null (an unset environment variable): the
    # Kinetics, Table 8 and mini Table 8 experiments set it; scratch is an explicit
    # pretrained=none.
    require_pretrained: bool = False
    base_width: int = 64
    stage_depths: list[int] | None = None
    temporal_kernels: list[list[int]] | None = None
    stem_temporal_kernel: int = 5
    dropout: float = 0.5
    zero_init_last_norm: bool = True


@dataclass
class NormConfig:
    """The norm layer; options that do not apply to ``name`` are ignored by the builder."""

    name: NormName = NormName["bn"]
    num_groups: int | None = GN_DEFAULT_GROUPS  # gn; channels_per_group, when set, wins
    channels_per_group: int | None = None
    eps: float = 1e-5
    momentum: float | None = None  # BN running-average momentum (torch default 0.1 when None)


@dataclass
class SamplerConfig:
    """Clip length and frame interval ("32x2" = 32 frames, every 2nd frame)."""

    num_frames: int = 32
    frame_interval: int = 2
    short_video: ShortVideo = ShortVideo["loop"]


@dataclass
class DemoConfig:
    """Parameters of :func:`videogn.data.demo.ensure_demo_dataset` (``data.source=demo``)."""

    cache_dir: str | None = None  # None: $VIDEOGN_CACHE/demo, else ~/.cache/videogn/demo
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the videos are and how clips are read and augmented."""

    name: str = "kinetics400"
    source: DataSource = DataSource["lists"]
    root: str | None = None  # relative list paths are joined to it (unless a split root is set)
    train_root: str | None = None
    val_root: str | None = None
    train_list: str | None = None
    val_list: str | None = None
    classes_file: str | None = None
    num_classes: int = 400
    backend: Backend = Backend["pyav"]
    decode_threads: int = 1
    # Seconds one video's decode may take before it counts as a failed video (a decoder
    # blocked on a damaged stream must not hang the run); null or 0: no limit.
    decode_timeout_s: float | None = 60.0
    num_workers: int = 4
    batch_size: Any = 8  # clips per process, or "auto" (memory planner)
    target_total_batch: int = 64  # batch_size=auto: accumulate up to this many clips per step
    # batch_size=auto: the per-device budget in GiB (None: the CUDA device's total memory;
    # required on CPU, where there is no device to ask).
    memory_budget_gb: float | None = None
    scale_range: list[int] = field(default_factory=lambda: [256, 320])
    crop_size: int = 224
    flip_p: float = 0.5
    normalization: str = "torchvision"
    # uint8: loaders deliver uint8 clips, normalized on the device (4x fewer bytes through the
    # workers and to the GPU); float32: normalized in the workers, as before.
    output_dtype: OutputDtype = OutputDtype["uint8"]
    max_failure_fraction: float = 0.01
    # Decode each video once and serve every later clip from stored frames: null (off),
    # "memory" (per process) or a directory of memory-mapped .npy files shared by runs. For
    # small datasets read many times (the mini Table 8), never for Kinetics.
    frame_cache: str | None = None
    demo: DemoConfig = field(default_factory=DemoConfig)


@dataclass
class OptimConfig:
    """SGD and the step schedule, expressed in epochs so that it scales with batch and data."""

    base_lr: float = 0.01  # for a total batch of base_batch_size clips, scaled linearly
    base_batch_size: int = 64
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    # Weight decay of the norms' γ/β (BN, GN, ...). 0: none, as the Non-local recipe does for
    # BN and the GN paper for fine-tuning; the same for both norms (docs/EXPERIMENTS.md).
    norm_weight_decay: float = 0.0
    weight_decay_bias: bool = False  # apply weight_decay to other biases (the classifier's)
    epochs: float = 106.0
    lr_steps: list[float] = field(default_factory=lambda: [0.375, 0.75])  # fractions of schedule
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1


@dataclass
class TestConfig:
    """Multi-view testing: num_clips x num_crops views per video, softmax aggregated."""

    num_clips: int = 10
    # 1 (centre crop of crop_size), 3 (crops along the long side: the released Non-local
    # code's approximation) or full (the whole frame at short_side, any aspect: the paper's)
    num_crops: Any = 1
    short_side: int = 256
    crop_size: int = 256  # = short_side: fully convolutional testing on the whole short side
    aggregate: Aggregation = Aggregation["mean"]
    views_per_batch: int = 10
    num_workers: int = 2
    max_videos: int | None = None  # evaluate only the first N listed videos (smoke runs)
    # pooled: average the whole res5 map, one softmax. fully_conv: the Non-local/PySlowFast
    # test head: average pools of the training clip's res5 map (sampler.num_frames/8 x
    # data.crop_size/32 squared) at stride 1, a softmax at each position, their mean.
    head: TestHeadName = TestHeadName["pooled"]
    # centered: clip k starts at the centre of the k-th of K equal parts of the valid range;
    # nonlocal: at int(N*k/K), wrapping past the end (the Non-local video reader).
    clip_positions: ClipPositions = ClipPositions["centered"]


@dataclass
class PreciseBNConfig:
    """Recompute BN running statistics over ``num_batches`` training batches before eval/save."""

    enabled: bool = True
    num_batches: int = 200


@dataclass
class TrainerConfig:
    """How the loop runs: precision, accumulation, checkpoints, logging."""

    amp: AmpMode = AmpMode["none"]
    channels_last_3d: bool = False
    accumulation_steps: int = 1
    precise_bn: PreciseBNConfig = field(default_factory=PreciseBNConfig)
    checkpoint_period: int = 1000  # iterations between mid-epoch checkpoints (0: epoch ends only)
    keep_checkpoints: int = 2
    log_period: int = 20
    progress_bar: bool = True
    num_threads: int | None = None  # CPU intra-op threads (None: cores minus loader workers)
    resume: str = "auto"  # auto (latest in the run dir) | never | path to a checkpoint/run dir
    test_at_end: bool = True
    max_iterations: int | None = None  # stop early (smoke tests); the schedule is unchanged
    # Figure 7's monitor: 1-clip validation with the training transform every val_period
    # iterations, or (val_period 0) every val_period_epochs epochs (points that do not move
    # with the list's size; a whole number lands on epoch ends); both 0/null: off. On
    # val_videos videos of the val list
    # (None: all of them). BN models are validated with precise BN statistics computed on
    # precise_bn.num_batches training batches before each point, then restored.
    val_period: int = 0
    val_period_epochs: float | None = None
    val_videos: int | None = None
    # Recompute activations in backward instead of keeping them: "none", "all", a list of
    # stages ([res2, res3]; stem, res2..res5), or "auto": the fewest stages, largest estimated
    # saving first, with which data.batch_size clips fit data.memory_budget_gb.
    activation_checkpointing: Any = "none"
    # cuDNN autotuning per input shape (fast for fixed-size clips; off when deterministic).
    cudnn_benchmark: bool = True
    # TF32 float32 convolutions/matmuls on Ampere+ GPUs: faster, but not the fp32 arithmetic
    # the paper's numbers come from; off by default (see videogn/engine/numerics.py).
    tf32: bool = False
    # How long a collective waits for a missing process before it fails (a peer that died or
    # hangs): the survivors then exit, and torchrun --max-restarts restarts the job.
    collective_timeout_s: float = 1800.0
    # SLURM: requeues of the job after a time-limit signal (SIGUSR1/SIGUSR2) before it ends
    # instead (SLURM_RESTART_COUNT counts them; see videogn/engine/requeue.py).
    max_requeues: int = 10


@dataclass
class TrainConfig:
    """Root of ``conf/train.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    test: TestConfig = field(default_factory=TestConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    name: str = "run"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class TestRunConfig:
    """Root of ``conf/test.yaml``: a checkpoint, plus overrides of the settings it recorded.

    Only the keys given on the command line replace the recorded ones; the others (model
    above all) come from the checkpoint.
    """

    checkpoint: str = MISSING  # a checkpoint file or a run directory (its latest checkpoint)
    test: TestConfig = field(default_factory=TestConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    device: str = "auto"


def register_configs() -> None:
    """Register the root schemas so ``train.yaml`` / ``test.yaml`` can name them as defaults.

    The group files (norm/, data/, ...) are typed through the root: ``TrainConfig.norm`` is a
    ``NormConfig``, so a group file with a wrong key fails when it is merged.
    """
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="test_schema", node=TestRunConfig)


def enum_value(value: Any) -> Any:
    """The plain value of an enum field (configs hold enum members after validation)."""
    return value.value if isinstance(value, enum.Enum) else value


# Keys that moved: old dotted name -> new one. A command line that still uses an old name is
# rejected before composing, with the new name (see check_override_keys).
MOVED_KEYS: dict[str, str] = {
    "optim.weight_decay_norm": "optim.norm_weight_decay",  # a bool became the decay itself
}


def drop_moved_keys(recorded: dict) -> dict:
    """A copy of a config recorded in a checkpoint without the keys that have moved since, so
    that a run from before a move can still be restored (its test needs none of them)."""
    recorded = copy.deepcopy(recorded)
    for key in MOVED_KEYS:
        *groups, name = key.split(".")
        node = recorded
        for group in groups:
            node = node.get(group) if isinstance(node, dict) else None
        if isinstance(node, dict) and name in node:
            del node[name]
            logger.info("recorded config: '%s' (now '%s') left out", key, MOVED_KEYS[key])
    return recorded


def check_override_keys(overrides: list[str], schema: type = TrainConfig) -> None:
    """Reject ``key=value`` overrides whose key is not in ``schema``, listing the valid keys.

    Hydra rejects a misspelled ``key=value`` without naming the valid keys (and suggests
    ``+key=value``, which it would then accept silently); this check covers both forms.
    Group selections (``norm=gn``), deletions (``~key``) and ``hydra.*`` are left to hydra.

    Raises:
        KeyError: naming the bad key, the valid keys at that level and the closest match.
    """
    for override in overrides:
        key = override.split("=", 1)[0].strip().lstrip("+")
        if "=" not in override or key.startswith(("~", "hydra")) or "." not in key:
            continue
        if key in MOVED_KEYS:
            raise KeyError(f"config key '{key}' has moved: use '{MOVED_KEYS[key]}'")
        node: Any = schema
        path: list[str] = []
        for part in key.split("."):
            if not is_dataclass(node):
                break  # inside a free-form dict (e.g. data.demo.params): anything goes
            names = {f.name: f for f in fields(node)}
            if part not in names:
                where = ".".join(path) or "the config root"
                close = difflib.get_close_matches(part, names, n=1)
                hint = f" Did you mean '{'.'.join([*path, close[0]])}'?" if close else ""
                raise KeyError(
                    f"unknown config key '{key}': '{part}' is not a key of {where}.{hint} "
                    f"Valid keys there: {', '.join(sorted(names))}"
                )
            path.append(part)
            node = _field_type(names[part])


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for name, value in node.items():
        key = f"{prefix}{name}"
        keys += [key, *_flat_keys(value, key + ".")]
    return keys


def check_experiment_keys(overrides: list[str], config_dir: str = CONFIG_DIR) -> None:
    """Reject an experiment file (or one it builds on) that still uses a moved key, naming
    the file and the new key, as :func:`check_override_keys` does for the command line.

    Hydra's own error for such a file names neither the new key nor a fix.

    Raises:
        KeyError: naming the file, the old key and the new one.
    """
    experiment_dir = Path(config_dir) / "experiment"
    pending = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("experiment=")]
    seen: set[str] = set()
    while pending:
        name = pending.pop().strip()
        path = experiment_dir / f"{name.removeprefix('/experiment/')}.yaml"
        if name in seen or not path.is_file():
            continue  # a missing file is hydra's to report
        seen.add(name)
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for entry in content.get("defaults", []):
            if isinstance(entry, str) and not entry.startswith(("override", "_self_")):
                base = entry if entry.startswith("/") else str(Path(name).parent / entry)
                pending.append(base.removeprefix("/experiment/").removeprefix("./"))
        for key in _flat_keys({k: v for k, v in content.items() if k != "defaults"}):
            if key in MOVED_KEYS:
                raise KeyError(f"{path}: config key '{key}' has moved: use '{MOVED_KEYS[key]}'")


def _field_type(f: Any) -> Any:
    # Annotations are strings (postponed evaluation); only dataclass names need resolving.
    return f.type if not isinstance(f.type, str) else globals().get(f.type)


def exit_on_bad_overrides(argv: list[str], config_name: str, config_dir: str = CONFIG_DIR) -> None:
    """Exit with status 2 and a clear message if a command-line key is not in the schema, or
    the chosen experiment file uses a key that has moved."""
    schema = TrainConfig if config_name == "train" else TestRunConfig
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        check_override_keys(overrides, schema)
        check_experiment_keys(overrides, config_dir)
    except KeyError as e:
        print(f"videogn-{config_name}: {e.args[0]}", file=sys.stderr)
        sys.exit(2)
