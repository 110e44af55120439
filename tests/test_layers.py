"""fastloop.layers: shapes, structure (v1's state-dict keys) and loss values of the layers ported models use."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastloop.basic_train import _loss_func2activ
from fastloop.layers import (
    AdaptiveConcatPool2d,
    BatchNorm1dFlat,
    BCEFlat,
    BCEWithLogitsFlat,
    CrossEntropyFlat,
    Flatten,
    FlattenedLoss,
    LabelSmoothingCrossEntropy,
    Lambda,
    MergeLayer,
    MSELossFlat,
    NoopLoss,
    NormType,
    PartialLayer,
    PixelShuffle_ICNR,
    PooledSelfAttention2d,
    PoolFlatten,
    ResizeBatch,
    SelfAttention,
    SequentialEx,
    SigmoidRange,
    View,
    WassersteinLoss,
    batchnorm_2d,
    bn_drop_lin,
    conv2d,
    conv2d_trans,
    conv_layer,
    embedding,
    icnr,
    init_default,
    res_block,
    sigmoid_range,
    simple_cnn,
    trunc_normal_,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------ shape layers
def test_flatten_keeps_the_batch_dimension_and_full_flattens_everything():
    x = torch.randn(4, 3, 2, 2)
    assert Flatten()(x).shape == (4, 12)
    assert Flatten(full=True)(x).shape == (48,)


def test_lambda_view_resize_batch_and_partial_layer_apply_their_function():
    x = torch.arange(24.0).view(2, 3, 4)
    assert torch.equal(Lambda(lambda t: t * 2)(x), x * 2)
    assert View(6, 4)(x).shape == (6, 4)
    assert ResizeBatch(4, 3)(x).shape == (2, 4, 3)
    layer = PartialLayer(F.leaky_relu, negative_slope=0.5)
    assert torch.equal(layer(-x), F.leaky_relu(-x, negative_slope=0.5))
    assert "negative_slope" in repr(layer)


def test_pool_flatten_and_adaptive_concat_pool_output_sizes():
    x = torch.randn(2, 5, 7, 7)
    assert PoolFlatten()(x).shape == (2, 5)
    out = AdaptiveConcatPool2d()(x)
    assert out.shape == (2, 10, 1, 1)
    assert torch.equal(out[:, :5, 0, 0], x.amax(dim=(2, 3)))  # max pool first, then average, as v1
    assert torch.allclose(out[:, 5:, 0, 0], x.mean(dim=(2, 3)))
    assert AdaptiveConcatPool2d(2)(x).shape == (2, 10, 2, 2)


# ------------------------------------------------------------------------------------------ conv blocks
def test_conv_layer_default_is_conv_relu_batchnorm_without_conv_bias():
    layer = conv_layer(3, 8)
    assert [type(m) for m in layer] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert layer[0].bias is None and layer[0].padding == (1, 1)
    assert layer(torch.randn(2, 3, 6, 6)).shape == (2, 8, 6, 6)


def test_conv_layer_options_build_v1s_modules_and_state_dict_keys():
    weight = conv_layer(4, 8, norm_type=NormType.Weight, leaky=0.1)
    assert sorted(weight.state_dict()) == ["0.bias", "0.weight_g", "0.weight_v"]  # fastai v1's keys
    assert isinstance(weight[1], nn.LeakyReLU) and weight[1].negative_slope == 0.1
    spectral = conv_layer(4, 8, norm_type=NormType.Spectral, self_attention=True)
    assert "0.weight_orig" in spectral.state_dict() and isinstance(spectral[-1], SelfAttention)
    one_d = conv_layer(4, 8, ks=5, is_1d=True)
    assert isinstance(one_d[0], nn.Conv1d) and isinstance(one_d[2], nn.BatchNorm1d)
    assert one_d(torch.randn(2, 4, 9)).shape == (2, 8, 9)
    trans = conv_layer(4, 8, ks=4, stride=2, transpose=True, use_activ=False, bias=True)
    assert [type(m) for m in trans] == [nn.ConvTranspose2d, nn.BatchNorm2d]
    assert trans(torch.randn(2, 4, 5, 5)).shape == (2, 8, 12, 12)


def test_weight_normalised_layers_do_not_repeat_torchs_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        conv_layer(4, 8, norm_type=NormType.Weight)
        PixelShuffle_ICNR(8)


def test_conv2d_and_conv2d_trans_padding_init_and_sizes():
    conv = conv2d(3, 5, ks=5, stride=2)
    assert conv.padding == (2, 2) and conv.bias is None
    assert conv(torch.randn(2, 3, 9, 9)).shape == (2, 5, 5, 5)
    with_bias = conv2d(3, 5, bias=True, init=nn.init.ones_)
    assert torch.all(with_bias.weight == 1) and torch.all(with_bias.bias == 0)
    assert conv2d_trans(3, 5)(torch.randn(2, 3, 4, 4)).shape == (2, 5, 8, 8)


def test_simple_cnn_shapes_and_batchnorm_on_all_but_the_last_layer():
    model = simple_cnn((3, 16, 16, 2))
    assert model(torch.randn(4, 3, 16, 16)).shape == (4, 2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(block[0].bias is not None for block in model[:3])  # no BatchNorm: the convs have a bias
    with_bn = simple_cnn((3, 8, 16, 10), kernel_szs=[5, 3, 3], strides=[1, 2, 2], bn=True)
    assert [any(isinstance(m, nn.BatchNorm2d) for m in block) for block in with_bn[:3]] == [True, True, False]
    assert with_bn[0][0].kernel_size == (5, 5) and with_bn[0][0].stride == (1, 1)
    assert with_bn(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_res_block_adds_its_input_and_dense_concatenates_it():
    block = res_block(8)
    x = torch.randn(2, 8, 6, 6)
    assert block(x).shape == x.shape
    inner = nn.Sequential(*block.layers[:2])
    assert torch.allclose(block(x), inner(x) + x)
    dense = res_block(8, dense=True, bottle=True)
    assert dense.layers[0][0].out_channels == 4
    assert dense(x).shape == (2, 16, 6, 6)


def test_sequential_ex_gives_each_layer_the_block_input_and_clears_it():
    seen = []

    class Spy(nn.Module):
        def forward(self, t):
            seen.append(t.orig)
            return t + 1

    x = torch.zeros(2, 3)
    block = SequentialEx(Spy(), Spy(), MergeLayer())
    out = block(x)
    assert all(o is x for o in seen)
    assert torch.equal(out, x + 2 + x)
    assert x.orig is None  # no reference kept after the forward
    block.append(nn.Identity())
    block.insert(0, nn.Identity())
    assert len(block.layers) == 5 and isinstance(block[0], nn.Identity)


def test_bn_drop_lin_lists_batchnorm_dropout_linear_and_activation():
    layers = bn_drop_lin(10, 5, p=0.5, actn=nn.ReLU())
    assert [type(m) for m in layers] == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU]
    assert [type(m) for m in bn_drop_lin(10, 5, bn=False)] == [nn.Linear]


def test_batchnorm_2d_batch_zero_starts_with_zero_weight():
    assert torch.all(batchnorm_2d(4).weight == 1)
    bn = batchnorm_2d(4, NormType.BatchZero)
    assert torch.all(bn.weight == 0) and torch.allclose(bn.bias, torch.full((4,), 1e-3))


def test_batchnorm1d_flat_normalises_the_last_dimension_of_any_rank():
    bn = BatchNorm1dFlat(6)
    x = torch.randn(4, 5, 6) * 3 + 2
    out = bn(x)
    assert out.shape == x.shape
    flat = out.view(-1, 6)
    assert torch.allclose(flat.mean(0), torch.zeros(6), atol=1e-5)


def test_embedding_and_trunc_normal_stay_within_two_standard_deviations():
    emb = embedding(100, 8)
    assert emb.weight.abs().max() < 0.02 + 1e-6
    t = trunc_normal_(torch.empty(1000), mean=1.0, std=0.5)
    assert t.min() >= 0.0 and t.max() <= 2.0


def test_init_default_initialises_the_weight_and_zeroes_the_bias():
    lin = init_default(nn.Linear(3, 4), nn.init.ones_)
    assert torch.all(lin.weight == 1) and torch.all(lin.bias == 0)


def test_sigmoid_range_maps_into_low_high():
    x = torch.tensor([-100.0, 0.0, 100.0])
    assert torch.allclose(sigmoid_range(x, 1, 5), torch.tensor([1.0, 3.0, 5.0]))
    assert torch.allclose(SigmoidRange(1, 5)(x), torch.tensor([1.0, 3.0, 5.0]))


# ------------------------------------------------------------------------------------------ upsampling, attention
def test_pixel_shuffle_icnr_upsamples_and_starts_as_nearest_neighbour():
    layer = PixelShuffle_ICNR(8, 4)
    x = torch.randn(2, 8, 5, 5)
    out = layer(x)
    assert out.shape == (2, 4, 10, 10)
    # ICNR: the scale**2 sub-pixels of each output pixel come from the same kernel, so every 2x2 block is flat
    assert torch.allclose(out[:, :, 0::2, 0::2], out[:, :, 1::2, 1::2], atol=1e-6)
    assert torch.allclose(out[:, :, 0::2, 0::2], out[:, :, 0::2, 1::2], atol=1e-6)


def test_pixel_shuffle_icnr_blur_and_other_norms_keep_the_shape():
    x = torch.randn(2, 8, 5, 5)
    assert PixelShuffle_ICNR(8, 4, blur=True)(x).shape == (2, 4, 10, 10)
    assert PixelShuffle_ICNR(8, 4, norm_type=NormType.Spectral)(x).shape == (2, 4, 10, 10)
    assert PixelShuffle_ICNR(8, 4, norm_type=None, scale=4)(x).shape == (2, 4, 20, 20)


def test_icnr_repeats_each_kernel_over_its_subpixel_group():
    w = torch.empty(16, 3, 3, 3)
    icnr(w, scale=2)
    for g in range(4):
        group = w[4 * g:4 * g + 4]
        assert torch.equal(group, group[:1].expand_as(group))


def test_self_attention_layers_start_as_the_identity():
    x = torch.randn(2, 16, 4, 4)
    for layer in (SelfAttention(16), PooledSelfAttention2d(16)):
        assert torch.allclose(layer(x), x)  # gamma starts at 0
        with torch.no_grad():
            layer.gamma.fill_(1.0)
        out = layer(x)
        assert out.shape == x.shape and not torch.allclose(out, x)


# ------------------------------------------------------------------------------------------ losses
def test_cross_entropy_flat_moves_the_class_axis_last_and_flattens():
    x, y = torch.randn(4, 5, 3), torch.randint(0, 5, (4, 3))
    expected = F.cross_entropy(x.transpose(1, 2).reshape(-1, 5), y.reshape(-1))
    assert torch.allclose(CrossEntropyFlat(axis=1)(x, y), expected)
    x2 = torch.randn(4, 3, 5)
    assert torch.allclose(CrossEntropyFlat()(x2, y), F.cross_entropy(x2.reshape(-1, 5), y.reshape(-1)))


def test_bce_and_mse_flat_losses_cast_targets_to_float():
    x, y = torch.randn(4, 3, 2), torch.randint(0, 2, (4, 3, 2))
    assert torch.allclose(BCEWithLogitsFlat()(x, y), F.binary_cross_entropy_with_logits(x.view(-1), y.view(-1).float()))
    assert torch.allclose(BCEFlat()(x.sigmoid(), y), F.binary_cross_entropy(x.sigmoid().view(-1), y.view(-1).float()))
    assert torch.allclose(MSELossFlat()(x, y), F.mse_loss(x.view(-1), y.view(-1).float()))


def test_flattened_loss_exposes_the_wrapped_loss_reduction_weight_and_attributes():
    loss = CrossEntropyFlat(weight=torch.tensor([1.0, 2.0]), ignore_index=3)
    assert repr(loss) == "FlattenedLoss of CrossEntropyLoss()"
    assert loss.ignore_index == 3 and torch.equal(loss.weight, torch.tensor([1.0, 2.0]))
    loss.reduction = "none"
    assert loss.func.reduction == "none"
    assert loss(torch.randn(6, 2), torch.randint(0, 2, (6,))).shape == (6,)
    loss.weight = None
    assert loss.func.weight is None


def test_flattened_losses_pickle_and_get_the_v1_activation():
    loss = pickle.loads(pickle.dumps(CrossEntropyFlat(axis=1)))
    assert isinstance(loss, FlattenedLoss) and loss.axis == 1
    out = torch.randn(2, 3, 4)
    assert torch.allclose(_loss_func2activ(loss)(out), F.softmax(out, dim=1))
    assert _loss_func2activ(BCEWithLogitsFlat()) is torch.sigmoid


def test_label_smoothing_cross_entropy_matches_its_formula_for_each_reduction():
    x, y, eps = torch.randn(6, 4), torch.randint(0, 4, (6,)), 0.2
    logp = F.log_softmax(x, dim=-1)
    per_item = -logp.sum(-1) * eps / 4 + (1 - eps) * F.nll_loss(logp, y, reduction="none")
    assert torch.allclose(LabelSmoothingCrossEntropy(eps, "none")(x, y), per_item)
    assert torch.allclose(LabelSmoothingCrossEntropy(eps)(x, y), per_item.mean())
    assert torch.allclose(LabelSmoothingCrossEntropy(eps, "sum")(x, y), per_item.sum())


def test_noop_and_wasserstein_losses():
    out = torch.tensor([1.0, 3.0])
    assert NoopLoss()(out, torch.zeros(2)) == 2.0
    assert WassersteinLoss()(torch.tensor([3.0, 5.0]), out) == 2.0
