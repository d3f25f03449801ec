"""``videogn-inflate SRC DST``: turn a 2D ImageNet ResNet into an I3D checkpoint."""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

from videogn.models.checkpoint_sources import SourceCheckpoint, read_checkpoint
from videogn.models.factory import MODELS, create_model
from videogn.models.inflate import (
    INFLATION_MODES,
    NORM_MISMATCH_POLICIES,
    load_pretrained,
    save_inflated,
)
from videogn.models.norm import NORM_BUILDERS

EXAMPLES = """\
examples:
  # Detectron's GroupNorm ImageNet ResNet-50 -> I3D GN for Kinetics-400 (norm picked from file)
  videogn-inflate R-50-GN.pkl i3d_r50_gn_imagenet.pt
  # the same file by name: downloaded once into $TORCH_HOME/hub/checkpoints, md5 checked
  videogn-inflate detectron:R-50-GN i3d_r50_gn_imagenet.pt --flip-input-channels
  # torchvision's BN ResNet-50, centre inflation, every backbone tensor must match
  videogn-inflate resnet50-0676ba61.pth i3d_r50_bn_imagenet.pt --mode center --strict
  # BN ImageNet weights into a GN I3D: copy gamma/beta, drop the BN statistics
  videogn-inflate resnet50.pth i3d_r50_gn_from_bn.pt --norm gn --norm-mismatch affine_only
  # keep the 1000-way ImageNet classifier
  videogn-inflate R-50-GN.pkl i3d_r50_gn_in1k_head.pt --num-classes 1000
  # a toy model (as in the tests)
  videogn-inflate toy2d.pth toy_i3d.pt --norm gn --num-groups 4 --base-width 8 \\
      --stage-depths 1,1,1,1 --num-classes 5

then:  videogn-train model.pretrained=i3d_r50_gn_imagenet.pt ...
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogn-inflate",
        description=(
            "Inflate a 2D ImageNet ResNet (torchvision .pth/.pt or Detectron .pkl) into an I3D\n"
            "checkpoint that videogn-train (model.pretrained=DST), videogn-test and\n"
            "videogn.create_model(pretrained=DST) load directly. The mapping table and the\n"
            "equivalence proofs are in docs/INFLATION.md."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "src",
        help="2D checkpoint (or a videogn checkpoint), or a named source downloaded once into "
        "torch hub's cache: torchvision:resnet50[.TAG], torchvision:resnet101, "
        "detectron:R-50-GN, detectron:R-101-GN, detectron:R-50, detectron:R-101",
    )
    parser.add_argument("dst", type=Path, help="I3D checkpoint to write (atomically)")
    parser.add_argument(
        "--mode",
        choices=INFLATION_MODES,
        default="mean",
        help="mean: kernel/t on every slice (default); center: kernel on the "
        "middle slice, zeros elsewhere",
    )
    parser.add_argument(
        "--norm-mismatch",
        choices=NORM_MISMATCH_POLICIES,
        default="refuse",
        help="BN file into a GN model or the reverse: refuse (default) or copy gamma/beta only",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail when a backbone tensor of SRC goes unused or one of the model "
        "stays unfilled (the classifier follows --num-classes)",
    )
    parser.add_argument(
        "--flip-input-channels",
        action="store_true",
        help="reverse conv1's input channels, e.g. a BGR-trained Detectron file "
        "for RGB input (default: keep, and record SRC's channel order in DST)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    _add_model_arguments(parser.add_argument_group("model (defaults: the paper's I3D ResNet-50)"))
    return parser


def _add_model_arguments(model) -> None:
    """The I3D to inflate into: the arguments of ``create_model``."""
    model.add_argument("--model", choices=sorted(MODELS), default="i3d_r50")
    model.add_argument(
        "--num-classes",
        type=int,
        default=400,
        help="classifier outputs (default 400, Kinetics); when it differs from "
        "SRC's classifier, that one is dropped",
    )
    model.add_argument(
        "--norm",
        choices=["auto", *NORM_BUILDERS],
        default="auto",
        help="norm of the I3D; auto (default) takes SRC's kind: bn or gn",
    )
    model.add_argument("--num-groups", type=int, help="GroupNorm groups (default 32)")
    model.add_argument("--channels-per-group", type=int, help="GroupNorm channels per group")
    model.add_argument("--base-width", type=int, help="stem width (default 64)")
    model.add_argument("--stage-depths", type=_int_list, help="blocks per stage, e.g. 3,4,6,3")
    model.add_argument("--stem-temporal-kernel", type=int, help="conv1's temporal kernel (5)")


def _model_config(args: argparse.Namespace, source: SourceCheckpoint) -> dict:
    norm = args.norm
    if norm == "auto":
        norm = "gn" if "gn" in source.norm_kinds.values() else "bn"
    norm_kwargs = {}
    if args.num_groups is not None:
        norm_kwargs["num_groups"] = args.num_groups
    if args.channels_per_group is not None:
        norm_kwargs["channels_per_group"] = args.channels_per_group
    overrides = {
        key: value
        for key, value in (
            ("base_width", args.base_width),
            ("stage_depths", args.stage_depths),
            ("stem_temporal_kernel", args.stem_temporal_kernel),
        )
        if value is not None
    }
    return {
        "name": args.model,
        "norm": norm,
        "norm_kwargs": norm_kwargs,
        "num_classes": args.num_classes,
        "overrides": overrides,
    }


def _input_preset(source: SourceCheckpoint, flipped: bool) -> dict | None:
    preset = dict(source.input_preset) if source.input_preset else None
    if preset and flipped:
        preset["channel_order"] = preset["channel_order"][::-1]
        preset["mean"], preset["std"] = preset["mean"][::-1], preset["std"][::-1]
    return preset


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> Path:
    """Read SRC, build the model, inflate into it, write DST; returns DST."""
    if args.dst.exists() and not args.force:
        raise FileExistsError(f"{args.dst} exists; pass --force to overwrite it")
    source = read_checkpoint(args.src)
    config = _model_config(args, source)
    model = create_model(
        config["name"],
        norm=config["norm"],
        norm_kwargs=config["norm_kwargs"],
        num_classes=config["num_classes"],
        **config["overrides"],
    )
    report = load_pretrained(
        model,
        source,
        mode=args.mode,
        norm_mismatch=args.norm_mismatch,
        strict=args.strict,
        flip_input_channels=args.flip_input_channels,
    )
    report.source_sha256 = _sha256(Path(source.path))  # a named source: its cached file
    return save_inflated(
        model,
        args.dst,
        report,
        model_config=config,
        input_preset=_input_preset(source, args.flip_input_channels),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        dst = run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # incl. PretrainedSourceError
        print(f"videogn-inflate: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
