"""The norm factory: which axes each norm takes its statistics over."""

import pytest
import torch
from torch import nn

from videogn.models.norm import (
    NORM_BUILDERS,
    FrozenBatchNorm3d,
    get_norm_layer,
    has_batch_norm,
    norm_kind,
)


def _clip_batch(n=4, c=8, t=3, h=5, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, t, h, w, generator=g, dtype=torch.float64) * 3 + 1


def _randomize_affine(norm: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in (norm.weight, norm.bias):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return norm


@pytest.mark.parametrize("name", ["gn", "ln", "in", "frozen_bn", "none"])
def test_output_of_a_sample_ignores_the_rest_of_the_batch(name):
    norm = get_norm_layer(name, **({"num_groups": 4} if name == "gn" else {}))(8).double().train()
    x = _clip_batch()
    y = norm(x)
    x2 = x.clone()
    x2[1:] = _clip_batch(seed=1)[1:] * 10  # change every other sample
    y2 = norm(x2)
    torch.testing.assert_close(y[0], y2[0])


def test_batch_norm_output_depends_on_the_other_samples():
    norm = get_norm_layer("bn")(8).double().train()
    x = _clip_batch()
    x2 = x.clone()
    x2[1:] *= 10
    assert not torch.allclose(norm(x)[0], norm(x2)[0])
    assert isinstance(get_norm_layer("sync_bn")(8), nn.SyncBatchNorm)


def test_bn_statistics_are_over_n_t_h_w():
    bn = get_norm_layer("bn")(8).double().train()
    x = _clip_batch()
    y = bn(x)
    mean = x.mean(dim=(0, 2, 3, 4), keepdim=True)
    var = x.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + bn.eps))


def test_gn_statistics_are_over_c_per_group_t_h_w():
    gn = _randomize_affine(get_norm_layer("gn", num_groups=2)(8).double())
    x = _clip_batch()
    grouped = x.view(4, 2, 4, 3, 5, 5)
    mean = grouped.mean(dim=(2, 3, 4, 5), keepdim=True)
    var = grouped.var(dim=(2, 3, 4, 5), unbiased=False, keepdim=True)
    expected = ((grouped - mean) / torch.sqrt(var + gn.eps)).view_as(x)
    expected = expected * gn.weight.view(1, -1, 1, 1, 1) + gn.bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(gn(x), expected)


def test_gn_with_one_group_is_layer_norm_over_c_t_h_w():
    x = _clip_batch()
    ln = get_norm_layer("ln")(8).double()
    assert ln.num_groups == 1
    reference = nn.LayerNorm([8, 3, 5, 5], elementwise_affine=False).double()
    torch.testing.assert_close(ln(x), reference(x))


def test_gn_with_one_channel_per_group_is_instance_norm():
    x = _clip_batch()
    inorm = get_norm_layer("in")(8).double()
    assert inorm.num_groups == 8
    torch.testing.assert_close(inorm(x), nn.InstanceNorm3d(8).double()(x))


def test_gn_channels_per_group_option():
    gn = get_norm_layer("gn", channels_per_group=16)(64)
    assert gn.num_groups == 4
    with pytest.raises(ValueError, match="channels_per_group=16 does not divide 24"):
        get_norm_layer("gn", channels_per_group=16)(24)


def test_frozen_bn_is_a_fixed_affine_from_pretrained_statistics():
    bn = _randomize_affine(nn.BatchNorm3d(8).double())
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    frozen = FrozenBatchNorm3d(8).double()
    frozen.load_state_dict(bn.state_dict())  # BN keys load, num_batches_tracked dropped
    assert list(frozen.parameters()) == []
    x = _clip_batch()
    torch.testing.assert_close(frozen.train()(x), bn.eval()(x))
    assert norm_kind(frozen) == "frozen_bn"


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_norm_layer("batchnorm")
    for name in NORM_BUILDERS:
        assert name in str(err.value)


def test_callable_norm_passes_through_and_has_batch_norm():
    layer = get_norm_layer(lambda c: nn.GroupNorm(2, c))
    model = nn.Sequential(nn.Conv3d(3, 8, 1), layer(8))
    assert not has_batch_norm(model)
    assert has_batch_norm(nn.Sequential(get_norm_layer("bn")(8)))
    assert isinstance(get_norm_layer("none")(8), nn.Identity)
