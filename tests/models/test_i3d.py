"""The ResNet-50 I3D at the paper's definition: shapes, parameters, FLOPs, every norm."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import videogn
from videogn.models import MODELS
from videogn.models.i3d import Bottleneck, stage_temporal_kernels
from videogn.models.norm import NORM_BUILDERS

TOY = {"base_width": 8, "stage_depths": (1, 1, 1, 1), "num_classes": 5}


def _full(norm="bn", **kw):
    with torch.device("meta"):
        return videogn.create_model("i3d_r50", norm=norm, **kw)


def test_param_count_matches_the_paper_model():
    n_params = sum(p.numel() for p in _full().parameters())
    # 2D ResNet-50 without fc (23.51 M) + inflation of conv1 and the 3x1x1 convs + 400-way fc.
    assert n_params == 28_043_472
    gn_params = sum(p.numel() for p in _full("gn").parameters())
    assert gn_params == n_params  # GN and BN have the same affine parameters


def test_layer_table_matches_the_nonlocal_baseline():
    model = _full()
    assert model.stem.conv.kernel_size == (5, 7, 7) and model.stem.conv.stride == (2, 2, 2)
    assert model.stem.conv.padding == (2, 3, 3) and model.stem.conv.bias is None
    assert model.stem.pool.kernel_size == (2, 3, 3) and model.stem.pool.stride == (2, 2, 2)
    assert model.pool2.kernel_size == (2, 1, 1) and model.pool2.stride == (2, 1, 1)
    kernels = [[b.conv_a.kernel_size[0] for b in getattr(model, f"res{i}")] for i in range(2, 6)]
    assert kernels == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    widths = [getattr(model, f"res{i}")[0].conv_c.out_channels for i in range(2, 6)]
    assert widths == [256, 512, 1024, 2048]
    for i in (3, 4, 5):
        first = getattr(model, f"res{i}")[0]
        assert first.conv_b.stride == (1, 2, 2) and first.conv_a.stride == (1, 1, 1)
        assert first.proj_conv.stride == (1, 2, 2) and first.proj_conv.kernel_size == (1, 1, 1)
    assert model.head.dropout.p == 0.5 and model.head.fc.out_features == 400


@pytest.mark.parametrize("frames, res5_t", [(32, 4), (64, 8)])
def test_output_stride_is_t_over_8(frames, res5_t):
    model = _full()
    x = torch.empty(1, 3, frames, 224, 224, device="meta")
    assert model.forward_features(x).shape == (1, 2048, res5_t, 7, 7)
    assert model(x).shape == (1, 400)


def _forward_gflops(frames: int) -> float:
    model = _full()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, frames, 224, 224, device="meta"))
    return counter.get_total_flops() / 1e9


def test_forward_flops_at_32_and_64_frames():
    # FLOPs as counted by torch.utils.flop_counter: 1 multiply-add = 2 FLOPs.
    gflops_32, gflops_64 = _forward_gflops(32), _forward_gflops(64)
    # Hand count: conv1 at 16 frames 9.4 GMAC, res2 at 8 frames 7.3, res3-5 at 4 frames 16.9.
    assert gflops_32 == pytest.approx(66.256, abs=0.01)
    # Fully convolutional in time: twice the frames, twice the work (up to border effects).
    assert gflops_64 == pytest.approx(132.511, abs=0.01)


def test_head_accepts_any_clip_size_fully_convolutionally():
    model = videogn.create_model("i3d_r50", norm="gn", norm_kwargs={"num_groups": 4}, **TOY)
    model.eval()
    with torch.no_grad():
        for shape in [(16, 64, 64), (24, 80, 96), (8, 32, 32)]:
            assert model(torch.randn(2, 3, *shape)).shape == (2, 5)


def test_last_norm_of_each_block_starts_at_zero():
    model = _full()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    model = videogn.create_model("i3d_r50", norm="bn", **TOY)
    for block in [m for m in model.modules() if isinstance(m, Bottleneck)]:
        assert torch.all(block.norm_c.weight == 0)
        assert torch.all(block.norm_b.weight == 1)
    model = videogn.create_model("i3d_r50", norm="bn", zero_init_last_norm=False, **TOY)
    assert all(
        torch.all(b.norm_c.weight == 1) for b in model.modules() if isinstance(b, Bottleneck)
    )


def test_each_block_owns_its_zero_init_and_a_norm_without_weights_is_left_alone():
    block = Bottleneck(
        16,
        16,
        bottleneck_channels=4,
        temporal_kernel=3,
        spatial_stride=1,
        norm_layer=nn.BatchNorm3d,
    )
    assert torch.all(block.norm_c.weight == 1)
    block.zero_init_last()
    assert torch.all(block.norm_c.weight == 0) and torch.all(block.norm_a.weight == 1)
    x = torch.randn(1, 16, 2, 4, 4).abs()
    assert torch.equal(block.eval()(x), x)  # identity on a non-negative input (ReLU at the end)
    plain = videogn.create_model("i3d_r50", norm="none", **TOY)  # no gamma to zero: no error
    assert all(isinstance(b.norm_c, nn.Identity) for b in plain.modules() if hasattr(b, "norm_c"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_declares_its_first_conv_and_classifier(name):
    """timm's test: the metadata inflation reads names the modules that play those roles."""
    with torch.device("meta"):
        model = videogn.create_model(name, num_classes=7)
    modules = dict(model.named_modules())
    first_conv = modules[model.pretrained_cfg["first_conv"]]
    classifier = modules[model.pretrained_cfg["classifier"]]
    assert isinstance(first_conv, nn.Conv3d) and first_conv.in_channels == 3
    assert first_conv is next(m for m in model.modules() if isinstance(m, nn.Conv3d))
    assert isinstance(classifier, nn.Linear) and classifier.out_features == 7


def test_classifier_init():
    model = videogn.create_model("i3d_r50", norm="bn", base_width=16, num_classes=400)
    fc = model.head.fc
    assert torch.all(fc.bias == 0)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("norm", sorted(set(NORM_BUILDERS) - {"sync_bn"}))
def test_forward_backward_for_every_norm_at_toy_size(norm):
    kwargs = {"num_groups": 4} if norm == "gn" else {}
    model = videogn.create_model(
        "i3d_r50", norm=norm, norm_kwargs=kwargs, dropout=0.0, zero_init_last_norm=False, **TOY
    )
    model.train()
    clips = torch.randn(2, 3, 16, 64, 64)
    loss = nn.functional.cross_entropy(model(clips), torch.tensor([1, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stem.conv.weight.grad.abs().sum() > 0


def test_sync_bn_model_builds_and_converts_to_plain_bn_layers_in_eval():
    model = videogn.create_model("i3d_r50", norm="sync_bn", **TOY).eval()
    assert isinstance(model.stem.norm, nn.SyncBatchNorm)
    with torch.no_grad():  # eval mode uses running statistics, no process group needed
        assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)


def test_depth_101_and_custom_depth_tables():
    assert sum(len(k) for k in stage_temporal_kernels(101, (3, 4, 23, 3))) == 33
    assert stage_temporal_kernels(50, (1, 2, 3, 1)) == [[3], [3, 1], [3, 1, 3], [1]]
    with pytest.raises(ValueError, match="do not match"):
        videogn.create_model("i3d_r50", stage_depths=(1, 1, 1, 1), temporal_kernels=[[3]] * 3)


def test_r101_temporal_kernels_follow_the_nonlocal_rule():
    """Non-local ``obtain_arc`` for the I3D ResNet-101: res4's conv a is 3x1x1 where
    ``i % 2 == 0`` for i in range(23), the last block (22) included; the other stages are
    the ResNet-50's."""
    with torch.device("meta"):
        model = videogn.create_model("i3d_r101")
    kernels = [[b.conv_a.kernel_size[0] for b in getattr(model, f"res{i}")] for i in range(2, 6)]
    assert kernels[2] == [3 if i % 2 == 0 else 1 for i in range(23)]
    assert kernels[2][22] == 3 and sum(k == 3 for k in kernels[2]) == 12
    assert [kernels[0], kernels[1], kernels[3]] == [[3, 3, 3], [3, 1, 3, 1], [1, 3, 1]]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError) as err:
        videogn.create_model("i3d_r18")
    assert all(name in str(err.value) for name in MODELS)


@pytest.mark.parametrize(
    "clip", [(8, 32, 32), (8, 48, 48), (16, 48, 64), (12, 37, 50), (9, 33, 65), (32, 224, 224)]
)
def test_res5_size_is_the_maps_size(clip):
    """The fully_conv window is computed from the training clip without running the model;
    it must be the res5 map that clip produces (4x7x7 at 32x224x224), also where sizes do not
    divide by 8 or 32."""
    from videogn.models.i3d import res5_size

    model = videogn.create_model("i3d_r50", num_classes=3, base_width=8, stage_depths=(1,) * 4)
    with torch.no_grad():
        features = model.eval().forward_features(torch.zeros(1, 3, *clip))
    assert res5_size(*clip) == tuple(features.shape[2:])


def test_window_logits_are_the_fc_of_every_window_average():
    head = videogn.models.i3d.Head(4, 3)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 2, 3, 5)
    with torch.no_grad():
        logits = head.eval().window_logits(x, (1, 2, 2))
        assert logits.shape == (2, 3, 2, 2, 4)  # positions: 2 x (3-2+1) x (5-2+1)
        expected = head.fc(x[:, :, 1, 1:3, 2:4].mean(dim=(2, 3)))
        torch.testing.assert_close(logits[:, :, 1, 1, 2], expected)
        # a window larger than the map is cut to it: the global average pool's logits
        torch.testing.assert_close(head.window_logits(x, (4, 7, 7)).flatten(1), head(x))
