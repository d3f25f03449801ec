"""Inflation proofs: an I3D fed one image repeated over T frames reproduces the 2D ResNet.

The 2D networks are torchvision's ``resnet50(weights=None)`` (BN) and the same network with
``GroupNorm(32, C)``, random weights and random BN statistics, in float32; both sides are then
compared in float64, so "equal" means equal to ~1e-12, not "close". docs/INFLATION.md derives
which frames must be equal; the tests check exactly those frames, and that the others differ.
"""

import copy
import logging
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet50

import videogn
from videogn.cli.inflate import main as inflate_main
from videogn.engine.checkpoint import capture_rng_state
from videogn.models.checkpoint_sources import map_key, read_checkpoint
from videogn.models.inflate import inflate_conv_weight, load_pretrained
from videogn.sweep.mini.pretrain2d import ResNet2d

EQUAL = 1e-9  # relative to the largest 2D value; float64 reaches 1e-12 or better
STAGES = ("stem", "res2", "pool2", "res3", "res4", "res5")


def gn32(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


def randomize_norms_(net: nn.Module, seed: int) -> nn.Module:
    """Non-trivial affine and BN statistics, so a swapped or skipped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
    return net


def stage_features_2d(net: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """2D features at the I3D's stage outputs (pool2 only pools time, so it equals res2)."""
    out = {"stem": net.maxpool(net.relu(net.bn1(net.conv1(image))))}
    out["res2"] = out["pool2"] = net.layer1(out["stem"])
    out["res3"] = net.layer2(out["res2"])
    out["res4"] = net.layer3(out["res3"])
    out["res5"] = net.layer4(out["res4"])
    return out


def stage_features_3d(model: nn.Module, video: torch.Tensor) -> dict[str, torch.Tensor]:
    out, x = {}, video
    for name in STAGES:
        x = out[name] = getattr(model, name)(x)
    return out


def boring_video(image: torch.Tensor, frames: int) -> torch.Tensor:
    return image.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()


def detectron_blobs(
    state: dict, norm: str, fold_bn: bool = False, dtype=np.float32
) -> dict[str, np.ndarray]:
    """A torchvision ResNet state dict under Detectron's blob names (ResNet.py, detector.py).

    Written independently of videogn's table, so a wrong row there fails the tests.
    """
    blobs = {}

    def put_norm(prefix: str, module: str) -> None:
        weight, bias = state[f"{module}.weight"], state[f"{module}.bias"]
        if norm == "gn":
            blobs[f"{prefix}_gn_s"], blobs[f"{prefix}_gn_b"] = weight, bias
        elif fold_bn:  # Detectron's BN files: statistics folded into AffineChannel's s/b
            var, mean = state[f"{module}.running_var"].double(), state[f"{module}.running_mean"]
            scale = weight.double() / torch.sqrt(var + 1e-5)
            blobs[f"{prefix}_bn_s"] = scale
            blobs[f"{prefix}_bn_b"] = bias.double() - mean.double() * scale
        else:
            blobs[f"{prefix}_bn_s"], blobs[f"{prefix}_bn_b"] = weight, bias
            blobs[f"{prefix}_bn_rm"] = state[f"{module}.running_mean"]
            blobs[f"{prefix}_bn_riv"] = state[f"{module}.running_var"]

    blobs["conv1_w"] = state["conv1.weight"]
    put_norm("conv1" if norm == "gn" else "res_conv1", "bn1")
    for key in state:
        if m := re.fullmatch(r"layer(\d)\.(\d+)\.conv(\d)\.weight", key):
            prefix = f"res{int(m[1]) + 1}_{m[2]}_branch2{'abc'[int(m[3]) - 1]}"
            blobs[f"{prefix}_w"] = state[key]
            put_norm(prefix, f"layer{m[1]}.{m[2]}.bn{m[3]}")
        elif m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.0\.weight", key):
            prefix = f"res{int(m[1]) + 1}_{m[2]}_branch1"
            blobs[f"{prefix}_w"] = state[key]
            put_norm(prefix, f"layer{m[1]}.{m[2]}.downsample.1")
    blobs["pred_w"], blobs["pred_b"] = state["fc.weight"], state["fc.bias"]
    blobs = {k: v.detach().double().numpy().astype(dtype) for k, v in blobs.items()}
    blobs["conv1_w_momentum"] = np.zeros_like(blobs["conv1_w"])  # optimizer state, ignored
    blobs["lr"], blobs["model_iter"] = np.float32(0.1), 450450
    return blobs


class Py2Pickler(pickle._Pickler):
    """Pickles str and bytes as Python 2 ``str`` (BINSTRING), like Detectron's files, so
    that they only load with ``encoding="latin1"``."""

    def _write_py2_str(self, data: bytes, obj) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._write_py2_str(obj, obj)

    def save_str(self, obj):
        if not obj.isascii():
            return super().save_str(obj)
        return self._write_py2_str(obj.encode("ascii"), obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def write_detectron_pkl(path, blobs: dict, under_blobs: bool = True) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump({"blobs": blobs} if under_blobs else blobs)
    data = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)  # the module path Python 2's numpy wrote


# ---------------------------------------------------------------- full ResNet-50 proofs


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)).double()


@pytest.fixture(scope="module")
def resnet50_2d(tmp_path_factory, image):
    """norm -> random 2D ResNet-50 (float32 weights), its .pth and Detectron .pkl, and its
    float64 logits on ``image`` in eval and in train mode."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("resnet50_2d")
    nets = {
        "bn": randomize_norms_(resnet50(weights=None), 1).eval(),
        "gn": randomize_norms_(resnet50(weights=None, norm_layer=gn32), 2).eval(),
    }
    out = {}
    for norm, net in nets.items():
        pth, pkl = folder / f"r50_{norm}.pth", folder / f"R-50-{norm.upper()}.pkl"
        torch.save(net.state_dict(), pth)
        write_detectron_pkl(pkl, detectron_blobs(net.state_dict(), norm))
        net64 = copy.deepcopy(net).double()
        with torch.no_grad():
            eval_logits, train_logits = net64(image), net64.train()(image)
        out[norm] = {"net": net, "pth": pth, "pkl": pkl, "eval": eval_logits, "train": train_logits}
    return out


def _report_delta(name: str, logits3d: torch.Tensor, logits2d: torch.Tensor) -> float:
    delta, scale = (logits3d - logits2d).abs().max().item(), logits2d.abs().max().item()
    print(f"max|dlogit| {name}: {delta:.3g} (max|logit| {scale:.3g})")
    return delta / scale


def _inflated_r50(ref: dict, norm: str, fmt: str, mode: str, tmp_path) -> nn.Module:
    """.pth: create_model(pretrained=) inflates on the fly (mean, its default) or
    load_pretrained(mode=center); .pkl: the whole path, Detectron pickle -> videogn-inflate ->
    create_model(pretrained=inflated checkpoint)."""
    if fmt == "pth" and mode == "mean":
        return videogn.create_model(norm=norm, num_classes=1000, pretrained=str(ref["pth"]))
    if fmt == "pth":
        model = videogn.create_model(norm=norm, num_classes=1000)
        load_pretrained(model, ref["pth"], mode=mode, strict=True)
        return model
    dst = tmp_path / "i3d.pt"
    argv = [str(ref["pkl"]), str(dst), "--mode", mode, "--num-classes", "1000", "--strict"]
    assert inflate_main(argv) == 0
    return videogn.create_model(norm=norm, num_classes=1000, pretrained=str(dst))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["center", "mean"])
@pytest.mark.parametrize("fmt", ["pth", "pkl"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_boring_video_logits_equal_2d_with_center_and_move_with_mean(
    resnet50_2d, image, norm, fmt, mode, tmp_path
):
    ref = resnet50_2d[norm]
    model = _inflated_r50(ref, norm, fmt, mode, tmp_path)
    with torch.no_grad():
        logits3d = model.double().eval()(boring_video(image, 16))
    relative_delta = _report_delta(f"{norm}-{fmt}-{mode}", logits3d, ref["eval"])
    if mode == "center":
        assert relative_delta <= EQUAL
    else:  # no res5 frame is exact at T=16 under mean inflation (docs/INFLATION.md)
        assert relative_delta > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_center_inflation_matches_2d_in_train_mode(resnet50_2d, image, norm):
    # GN's (C/G, T, H, W) statistics over identical frames are its (C/G, H, W) ones; so are
    # BN's batch statistics over (N, T, H, W) versus (N, H, W).
    ref = resnet50_2d[norm]
    model = videogn.create_model(norm=norm, num_classes=1000, dropout=0.0)
    load_pretrained(model, ref["pth"], mode="center", strict=True)
    with torch.no_grad():
        logits3d = model.double().train()(boring_video(image, 16))
    assert _report_delta(f"{norm}-pth-center-train", logits3d, ref["train"]) <= EQUAL


def exact_frames_mean_bn(frames: int) -> dict[str, range]:
    """docs/INFLATION.md: frames equal to the 2D features under mean inflation, BN eval."""
    quarter, eighth = frames // 4, frames // 8
    return {
        "stem": range(1, quarter - 1),
        "res2": range(4, quarter - 4),
        "pool2": range(2, eighth - 2),
        "res3": range(4, eighth - 4),
        "res4": range(7, eighth - 7),
        "res5": range(8, eighth - 8),
    }


@pytest.mark.slow
@pytest.mark.parametrize("norm, frame_counts", [("bn", (32, 144)), ("gn", (32,))], ids=["bn", "gn"])
def test_mean_inflation_equals_2d_exactly_on_the_derived_frames(resnet50_2d, norm, frame_counts):
    # Inflated in float64, so that t * (w / t) == w up to float64 rounding.
    model = videogn.create_model(norm=norm, num_classes=1000).double().eval()
    load_pretrained(model, resnet50_2d[norm]["pth"], mode="mean", strict=True)
    image = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)).double()
    with torch.no_grad():
        feats2d = stage_features_2d(copy.deepcopy(resnet50_2d[norm]["net"]).double(), image)
    for frames in frame_counts:
        with torch.no_grad():
            feats3d = stage_features_3d(model, boring_video(image, frames))
        # GN's statistics span all frames, so the border frames reach every frame.
        no_frame = dict.fromkeys(STAGES, range(0))
        expected = exact_frames_mean_bn(frames) if norm == "bn" else no_frame
        for stage in STAGES:
            ref = feats2d[stage].unsqueeze(2)
            per_frame = (feats3d[stage] - ref).abs().amax(dim=(0, 1, 3, 4))
            exact = (per_frame <= EQUAL * ref.abs().max()).nonzero().flatten().tolist()
            assert exact == list(expected[stage]), f"T={frames} {stage}: {per_frame.tolist()}"


# ---------------------------------------------------------------- rules, on toy networks

TOY_I3D = {"base_width": 8, "stage_depths": (1, 1, 1, 1)}


def toy_2d(norm: str, num_classes: int = 5, seed: int = 0) -> ResNet2d:
    torch.manual_seed(seed)
    norm_layer = nn.BatchNorm2d if norm == "bn" else (lambda c: nn.GroupNorm(4, c))
    # The 2D net the mini study pretrains: torchvision's layout at the toy I3D's shape.
    net = ResNet2d(width=8, depths=(1, 1, 1, 1), norm_layer=norm_layer, num_classes=num_classes)
    return randomize_norms_(net, seed)


def toy_i3d(norm: str, num_classes: int = 5, **kw) -> nn.Module:
    norm_kwargs = {"num_groups": 4} if norm == "gn" else None
    return videogn.create_model(
        norm=norm, norm_kwargs=norm_kwargs, num_classes=num_classes, **{**TOY_I3D, **kw}
    )


def saved(obj, path):
    torch.save(obj.state_dict() if isinstance(obj, nn.Module) else obj, path)
    return path


def test_inflate_conv_weight_modes():
    weight = torch.randn(4, 3, 7, 7)
    mean = inflate_conv_weight(weight, 5, "mean")
    assert mean.shape == (4, 3, 5, 7, 7) and torch.allclose(mean.sum(2), weight)
    assert all(torch.equal(mean[:, :, i], mean[:, :, 0]) for i in range(5))
    center = inflate_conv_weight(weight, 3, "center")
    assert torch.equal(center[:, :, 1], weight) and not center[:, :, [0, 2]].any()
    assert torch.equal(inflate_conv_weight(weight, 1, "mean")[:, :, 0], weight)
    with pytest.raises(ValueError, match="unknown inflation mode 'repeat'"):
        inflate_conv_weight(weight, 3, "repeat")


# (Detectron blob, torchvision key, videogn key): the rows of docs/INFLATION.md's table.
NAME_ROWS = [
    ("conv1_w", "conv1.weight", "stem.conv.weight"),
    ("res_conv1_bn_s", "bn1.weight", "stem.norm.weight"),
    ("res_conv1_bn_riv", "bn1.running_var", "stem.norm.running_var"),
    ("conv1_gn_b", "bn1.bias", "stem.norm.bias"),
    ("res2_0_branch2a_w", "layer1.0.conv1.weight", "res2.0.conv_a.weight"),
    ("res2_2_branch2b_bn_rm", "layer1.2.bn2.running_mean", "res2.2.norm_b.running_mean"),
    ("res4_5_branch2c_gn_s", "layer3.5.bn3.weight", "res4.5.norm_c.weight"),
    ("res3_0_branch1_w", "layer2.0.downsample.0.weight", "res3.0.proj_conv.weight"),
    ("res5_0_branch1_bn_b", "layer4.0.downsample.1.bias", "res5.0.proj_norm.bias"),
    ("pred_w", "fc.weight", "head.fc.weight"),
]


@pytest.mark.parametrize("detectron, torchvision_key, videogn_key", NAME_ROWS)
def test_file_names_map_to_the_i3d_keys(detectron, torchvision_key, videogn_key):
    expected = ".".join(videogn_key.split(".")[:-1]), videogn_key.split(".")[-1]
    assert map_key(detectron, "detectron")[1:] == expected
    assert map_key(torchvision_key, "torchvision")[1:] == expected
    assert map_key(videogn_key, "videogn")[1:] == expected
    assert map_key("res2_0_branch2a_b", "detectron") is None  # a conv bias has no target


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_detectron_pickle_reads_to_the_same_tensors_as_torchvision(tmp_path, norm):
    state = toy_2d(norm).state_dict()
    pth = read_checkpoint(saved(state, tmp_path / "toy.pth"))
    write_detectron_pkl(tmp_path / "toy.pkl", detectron_blobs(state, norm))
    pkl = read_checkpoint(tmp_path / "toy.pkl")
    assert pkl.layout == "detectron" and pth.layout == "torchvision"
    assert pkl.tensors.keys() == pth.tensors.keys() and not pkl.unmapped and not pth.unmapped
    for key, tensor in pth.tensors.items():
        assert torch.equal(pkl.tensors[key], tensor), key
    assert set(pkl.norm_kinds.values()) == set(pth.norm_kinds.values()) == {norm}
    assert sorted(pkl.ignored) == ["conv1_w_momentum", "lr", "model_iter"]
    assert pkl.input_preset["channel_order"] == "BGR" and pth.input_preset["channel_order"] == "RGB"


@pytest.mark.parametrize("file_norm, model_norm", [("bn", "gn"), ("gn", "bn")])
def test_norm_mismatch_is_refused_naming_the_first_layer(tmp_path, file_norm, model_norm):
    src = saved(toy_2d(file_norm), tmp_path / "toy.pth")
    with pytest.raises(ValueError, match=rf"norm mismatch at stem\.norm: .* has {file_norm}"):
        load_pretrained(toy_i3d(model_norm), src)


def test_affine_only_copies_gamma_beta_and_reports_the_dropped_statistics(tmp_path, caplog):
    net = toy_2d("bn")
    model = toy_i3d("gn")
    caplog.set_level(logging.INFO)
    report = load_pretrained(model, saved(net, tmp_path / "toy.pth"), norm_mismatch="affine_only")
    assert torch.equal(model.res3[0].norm_b.weight, net.layer2[0].bn2.weight)
    assert torch.equal(model.stem.norm.bias, net.bn1.bias)
    dropped = {key for key, _ in report.dropped}
    assert {"bn1.running_mean", "layer4.0.downsample.1.running_var"} <= dropped
    assert len(dropped) == 2 * 17  # mean and var of the 17 BN layers of the toy
    assert report.complete and "norm mismatch in 17 layers" in caplog.text


def test_classifier_is_kept_when_class_counts_match_and_dropped_otherwise(tmp_path, caplog):
    net = toy_2d("gn", num_classes=5)
    src = saved(net, tmp_path / "toy.pth")
    same = toy_i3d("gn", num_classes=5)
    assert load_pretrained(same, src, strict=True).classifier == "kept (5 classes)"
    assert torch.equal(same.head.fc.weight, net.fc.weight)
    other = toy_i3d("gn", num_classes=7)
    fresh = other.head.fc.weight.clone()
    caplog.set_level(logging.INFO)
    report = load_pretrained(other, src, strict=True)  # a dropped classifier is not an error
    assert report.classifier == "dropped (5 -> 7 classes)"
    assert torch.equal(other.head.fc.weight, fresh)
    assert "classifier dropped: fc.weight/fc.bias hold 5 classes, the model has 7" in caplog.text


def test_strict_turns_unused_and_unfilled_tensors_into_an_error(tmp_path):
    state = toy_2d("bn").state_dict()
    state["layer9.0.conv1.weight"] = torch.zeros(1)  # a key no table row names
    src = saved(state, tmp_path / "toy.pth")
    deeper = toy_i3d("bn", stage_depths=(1, 2, 1, 1))  # res3.1 has nothing in the file
    report = load_pretrained(deeper, src)
    assert report.unused_source == ["layer9.0.conv1.weight"]
    assert "res3.1.conv_a.weight" in report.unfilled_target
    assert re.search(r"unfilled +res3\.1\.norm_c\.running_var", report.table())
    with pytest.raises(ValueError, match=r"(?s)strict loading failed.*layer9\.0\.conv1\.weight"):
        load_pretrained(toy_i3d("bn", stage_depths=(1, 2, 1, 1)), src, strict=True)


@pytest.mark.parametrize("under_blobs", [True, False])
def test_detectron_bn_with_folded_statistics_reproduces_bn_eval(tmp_path, under_blobs):
    net = toy_2d("bn").eval().double()
    blobs = detectron_blobs(net.state_dict(), "bn", fold_bn=True, dtype=np.float64)
    write_detectron_pkl(tmp_path / "R-toy.pkl", blobs, under_blobs)
    model = toy_i3d("bn").double().eval()
    report = load_pretrained(model, tmp_path / "R-toy.pkl", mode="center", strict=True)
    assert report.filled["stem.norm.running_mean"].startswith("0 (statistics folded")
    image = torch.randn(2, 3, 32, 32).double()
    with torch.no_grad():
        logits2d, logits3d = net(image), model(boring_video(image, 8))
    assert (logits3d - logits2d).abs().max() <= EQUAL * logits2d.abs().max()


def test_flip_input_channels_lets_rgb_input_see_what_bgr_input_saw(tmp_path):
    src = saved(toy_2d("gn"), tmp_path / "toy.pth")
    as_is, flipped = toy_i3d("gn").eval(), toy_i3d("gn").eval()
    load_pretrained(as_is, src)
    report = load_pretrained(flipped, src, flip_input_channels=True)
    assert "input channels reversed" in report.filled["stem.conv.weight"]
    bgr = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(flipped(bgr.flip(1)), as_is(bgr))


def test_inflated_checkpoint_records_its_settings_and_loads_like_training_ones(tmp_path):
    src, dst = tmp_path / "R-toy-GN.pkl", tmp_path / "toy_i3d.pt"
    write_detectron_pkl(src, detectron_blobs(toy_2d("gn").state_dict(), "gn"))
    argv = [str(src), str(dst), "--num-groups", "4", "--base-width", "8"]
    assert inflate_main([*argv, "--stage-depths", "1,1,1,1", "--num-classes", "5"]) == 0
    saved_file = torch.load(dst, weights_only=True)
    assert saved_file["format"] == "videogn.inflated/1"
    assert saved_file["inflation"]["mode"] == "mean"
    assert saved_file["inflation"]["layout"] == "detectron"
    assert len(saved_file["inflation"]["source_sha256"]) == 64
    assert saved_file["meta"]["input"]["channel_order"] == "BGR"
    assert saved_file["meta"]["model_config"]["norm"] == "gn"  # picked from the file
    model = toy_i3d("gn", pretrained=str(dst))
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved_file["model"][key]), key
    # A training checkpoint (model state under "model", saved from DDP) loads the same way.
    training = {
        "model": {f"module.{k}": v for k, v in saved_file["model"].items()},
        "optimizer": {"state": {}},
        "rng": [capture_rng_state()],  # loads weights-only (NumPy's state as plain values)
    }
    report = load_pretrained(toy_i3d("gn"), saved(training, tmp_path / "iter_1.pt"), strict=True)
    assert report.layout == "videogn" and report.mode == "none (already 3D)"


def test_a_file_without_resnet_weights_is_rejected_with_its_keys(tmp_path):
    src = saved({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth: no ResNet weights.*encoder\.weight"):
        load_pretrained(toy_i3d("bn"), src)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        load_pretrained(toy_i3d("bn"), tmp_path / "missing.pkl")


def test_loading_needs_the_models_declared_first_conv_and_classifier(tmp_path):
    src = saved(toy_2d("bn"), tmp_path / "toy.pth")

    class Undeclared(nn.Module):
        pass

    with pytest.raises(ValueError, match="Undeclared has no pretrained_cfg naming 'first_conv'"):
        load_pretrained(Undeclared(), src)
    misnamed = toy_i3d("bn")
    misnamed.pretrained_cfg = {"first_conv": "stem.conv", "classifier": "head.linear"}
    with pytest.raises(ValueError, match=r"\['classifier'\] = 'head.linear' is not a module"):
        load_pretrained(misnamed, src)
    # The classifier rule follows the declared name: declare none of the model's layers the
    # classifier and a 5-class file no longer fits a 7-class head.fc.
    renamed = toy_i3d("bn", num_classes=7)
    renamed.pretrained_cfg = {"first_conv": "stem.conv", "classifier": "head.dropout"}
    with pytest.raises(
        ValueError, match=r"shape \(5, 256\) does not fit the model's head\.fc\.weight"
    ):
        load_pretrained(renamed, src)
