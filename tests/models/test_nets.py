"""Backbones: shapes for MNIST-like and CIFAR-like inputs, the published layouts, the MLP width formula."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from aesweep.models import nets
from aesweep.registry import BACKBONES, UnknownNameError
from aesweep.spec import backbones

SHAPES = [(1, 28, 28), (3, 32, 32)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("in_shape", SHAPES, ids=["28x28x1", "32x32x3"])
@pytest.mark.parametrize("name", ["conv", "mlp", "resnet"])
def test_backbone_shapes_and_range(name, in_shape):
    bb = nets.build_backbone(name, in_shape, latent_dim=8, width=0.25)
    x = torch.rand(4, *in_shape)
    h = bb.encoder(x)
    assert h.shape == (4, bb.feature_dim)
    # Large codes too: the Sigmoid keeps every reconstruction in [0, 1]; the output has the input's shape.
    x_hat = bb.decoder(50 * torch.randn(4, 8))
    assert x_hat.shape == (4, *in_shape)
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert isinstance(bb, nn.Module) and bb.latent_dim == 8 and bb.in_shape == in_shape


def test_registry_names_and_unknown():
    assert {"conv", "mlp", "resnet"} <= set(BACKBONES.names())
    with pytest.raises(UnknownNameError, match="known: .*conv.*mlp.*resnet"):
        nets.build_backbone("vgg", (3, 32, 32), 8)


def test_conv_cifar_layout():
    bb = nets.build_backbone("conv", (3, 32, 32), latent_dim=16)
    convs = [m for m in bb.encoder.modules() if isinstance(m, nn.Conv2d)]
    # The study's six blocks: stride 2 at blocks 2, 4, 6; channels 64, 64, 128, 128, 256, 256.
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bb.encoder.modules()) == 6
    x = torch.rand(2, 3, 32, 32)
    assert bb.encoder[:-1](x).shape == (2, 256, 4, 4)  # before the Flatten
    assert bb.feature_dim == 4096
    # Decoder: three stride-2 transposed convs, kernel 4, back to 32x32.
    ups = [m for m in bb.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.kernel_size, u.stride, u.padding) for u in ups] == [((4, 4), (2, 2), (1, 1))] * 3
    assert bb.decoder[0].out_features == 4096
    # The study's decoder: no activation after the Linear, three transposed-conv blocks 256 -> 128 -> 64 -> 3,
    # then Conv2d(3, 3, 1, 1) + Sigmoid.
    assert isinstance(bb.decoder[1], nn.Unflatten) and isinstance(bb.decoder[2], nn.ConvTranspose2d)
    assert [(u.in_channels, u.out_channels) for u in ups] == [(256, 128), (128, 64), (64, 3)]
    last = [m for m in bb.decoder.modules() if isinstance(m, nn.Conv2d)][-1]
    assert (last.in_channels, last.out_channels, last.kernel_size, last.stride) == (3, 3, (1, 1), (1, 1))
    assert isinstance(bb.decoder[-2], nn.Sigmoid)


@pytest.mark.parametrize("channels", [1, 3])
def test_conv_decoder_feeds_the_image_channels_to_the_1x1_conv_unrectified(channels):
    # The last transposed conv's C-channel map reaches Conv2d(C, C, 1) without BatchNorm + ReLU: a rectified
    # map has no negative value, and with one output channel a negative 1x1 weight then inverts the image until
    # training drags it through zero (study 000's AE on Fashion-MNIST crawled for 50 epochs that way).
    torch.manual_seed(0)
    bb = nets.build_backbone("conv", (channels, 28, 28), latent_dim=8, width=0.25)
    last = [m for m in bb.decoder.modules() if isinstance(m, nn.Conv2d)][-1]
    seen = []
    last.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    bb.decoder(torch.randn(16, 8))
    assert (last.in_channels, last.kernel_size) == (channels, (1, 1))
    assert isinstance(bb.decoder[-4], nn.ConvTranspose2d) and bb.decoder[-4].bias is not None
    assert seen[0].min() < 0 < seen[0].max()


def test_conv_pads_28_to_32_and_crops_back():
    bb = nets.build_backbone("conv", (1, 28, 28), latent_dim=4)
    x = torch.rand(2, 1, 28, 28)
    padded = bb.encoder[0](x)
    assert padded.shape == (2, 1, 32, 32)
    assert torch.equal(padded[..., 2:30, 2:30], x) and padded[..., :2, :].abs().sum() == 0
    assert bb.feature_dim == 4096  # the same 256 x 4 x 4 grid as CIFAR-10
    assert bb.decoder(torch.randn(2, 4)).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("depth,n_convs", [(0, 3), (1, 6), (2, 9)])
def test_conv_depth_adds_stride1_blocks(depth, n_convs):
    bb = nets.build_backbone("conv", (3, 32, 32), latent_dim=4, width=0.125, depth=depth)
    convs = [m for m in bb.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n_convs
    assert sum(c.stride[0] == 2 for c in convs) == 3
    assert bb.decoder(torch.randn(2, 4)).shape == (2, 3, 32, 32)


def test_conv_width_scales_channels():
    bb = nets.build_backbone("conv", (3, 32, 32), latent_dim=4, width=0.5)
    assert bb.feature_dim == 128 * 4 * 4
    assert [m.out_channels for m in bb.encoder.modules() if isinstance(m, nn.Conv2d)] == [
        32,
        32,
        64,
        64,
        128,
        128,
    ]


def _widths_reference(d_x: int, d_z: int, n: int) -> list[int]:
    # Floor, not the ceiling eq. (1) prints: the study's parameter counts are those of the floor (test_model.py).
    return [d_x - math.floor(Fraction((d_x - d_z) * i, n)) for i in range(1, n + 1)]


@pytest.mark.parametrize("d_x", [784, 3072])
@pytest.mark.parametrize("n_layers", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("d_z", [2, 10, 33, 128])
def test_mlp_widths_formula(d_x, n_layers, d_z):
    widths = backbones.mlp_widths(d_x, d_z, n_layers)
    assert widths == _widths_reference(d_x, d_z, n_layers)
    assert len(widths) == n_layers and widths[-1] == d_z
    assert widths == sorted(widths, reverse=True)


def test_mlp_widths_known_values():
    # 784 -> 10 in 3 layers: (784 - 10) / 3 = 258 exactly; 784 -> 33 in 2: floor(751/2) = 375.
    assert backbones.mlp_widths(784, 10, 3) == [526, 268, 10]
    assert backbones.mlp_widths(784, 33, 2) == [409, 33]
    # The beta-VAE study's 3-layer AE on 784 pixels with D_z = 2: hidden [524, 263] (its 1,100,668 parameters).
    assert backbones.mlp_widths(784, 2, 3) == [524, 263, 2]


@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_mlp_layers_follow_widths(n_layers):
    in_shape, d_z = (1, 28, 28), 10
    bb = nets.build_backbone("mlp", in_shape, d_z, depth=n_layers)
    widths = backbones.mlp_widths(784, d_z, n_layers)
    enc = [m for m in bb.encoder.modules() if isinstance(m, nn.Linear)]
    dec = [m for m in bb.decoder.modules() if isinstance(m, nn.Linear)]
    # Encoder: hidden layers 1..n-1; layer n (-> D_z) is the shared bottleneck of model.py.
    assert [m.out_features for m in enc] == widths[:-1]
    assert bb.feature_dim == ([784, *widths][n_layers - 1])
    assert [(m.in_features, m.out_features) for m in dec] == list(
        zip([d_z, *reversed(widths[:-1])], [*reversed(widths[:-1]), 784], strict=True)
    )
    assert isinstance(bb.decoder[-2], nn.Sigmoid)


@pytest.mark.parametrize("depth", [0, 9])
def test_mlp_depth_range(depth):
    with pytest.raises(ValueError, match="1..8"):
        nets.build_backbone("mlp", (1, 28, 28), 10, depth=depth)


@pytest.mark.parametrize("depth", [1, 2])
def test_resnet_layout(depth):
    bb = nets.build_backbone("resnet", (3, 32, 32), latent_dim=8, width=0.125, depth=depth)
    blocks = [m for m in bb.encoder.modules() if isinstance(m, nets.BasicBlock)]
    assert len(blocks) == 4 * depth
    assert bb.feature_dim == 64  # 512 * 0.125, globally pooled
    assert not any(isinstance(m, nn.MaxPool2d) for m in bb.encoder.modules())
    stem = bb.encoder[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    # Its decoder is the conv decoder: Linear to 256*w x 4 x 4, three transposed convs.
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in bb.decoder.modules()) == 3


def test_resnet_full_width_feature():
    bb = nets.build_backbone("resnet", (1, 28, 28), latent_dim=8)
    assert bb.feature_dim == 512
    bb.eval()
    with torch.no_grad():
        assert bb.encoder(torch.rand(2, 1, 28, 28)).shape == (2, 512)


def test_mlp_explicit_widths_and_decoder_widths():
    # The paradigms study 001's MNIST AE: 784 -> 256 -> 128 -> z(128); its decoder 128 -> 256 -> 784.
    bb = nets.build_backbone("mlp", (1, 28, 28), 128, widths=[256, 128], decoder_widths=[256])
    enc = [(m.in_features, m.out_features) for m in bb.encoder.modules() if isinstance(m, nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in bb.decoder.modules() if isinstance(m, nn.Linear)]
    assert enc == [(784, 256), (256, 128)] and bb.feature_dim == 128
    assert dec == [(128, 256), (256, 784)]
    mirrored = nets.build_backbone("mlp", (1, 28, 28), 16, widths=[256, 128])
    assert [m.out_features for m in mirrored.decoder.modules() if isinstance(m, nn.Linear)] == [128, 256, 784]


@pytest.mark.parametrize("name", ["conv", "mlp"])
def test_dropout_is_off_in_eval_mode(name):
    bb = nets.build_backbone(name, (1, 28, 28), 8, width=0.25, dropout=0.5)
    assert any(isinstance(m, nn.Dropout | nn.Dropout2d) for m in bb.modules())
    x, z = torch.rand(4, 1, 28, 28), torch.randn(4, 8)
    bb.train()
    assert not torch.equal(bb.encoder(x), bb.encoder(x))
    assert not torch.equal(bb.decoder(z), bb.decoder(z))
    bb.eval()
    seen = bb.encoder(x), bb.decoder(z)
    for m in bb.modules():  # the same network with dropout switched off gives the same outputs in eval mode
        if isinstance(m, nn.Dropout | nn.Dropout2d):
            m.p = 0.0
    assert torch.equal(seen[0], bb.encoder(x)) and torch.equal(seen[1], bb.decoder(z))


def test_conv_explicit_blocks_004_layout():
    # 004: three strided convs 32/64/128 to 4x4, FC to the latent, three transposed convs back, Tanh output.
    bb = nets.build_backbone("conv", (3, 32, 32), 128, channels=[32, 64, 128], strides=[2, 2, 2],
                             output_activation="tanh")
    convs = [m for m in bb.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [(32, 2), (64, 2), (128, 2)]
    assert bb.feature_dim == 128 * 4 * 4
    ups = [m for m in bb.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels) for u in ups] == [(128, 64), (64, 32), (32, 3)]
    assert isinstance(bb.decoder[-2], nets.HalfTanh)
    out = bb.decoder(50 * torch.randn(2, 128))
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    # (1 + tanh x) / 2 is sigmoid(2x): the study's Tanh on [-1, 1] data, mapped to [0, 1].
    t = torch.linspace(-4, 4, 9)
    assert torch.allclose(nets.HalfTanh()(t), torch.sigmoid(2 * t), atol=1e-6)


def test_linear_output_is_unbounded_in_training_and_an_image_in_eval():
    # 002's AE: the decoder's scalar output under MSE; eval mode projects it onto the pixel range.
    bb = nets.build_backbone("mlp", (1, 28, 28), 10, widths=[64], output_activation="linear")
    assert isinstance(bb.decoder[-2], nets.LinearOutput)
    z = 50 * torch.randn(16, 10)
    bb.train()
    raw = bb.decoder(z)
    assert raw.min() < 0 and raw.max() > 1  # no squashing: the gradient of a saturated sigmoid is not there
    bb.eval()
    assert torch.equal(bb.decoder(z), raw.clamp(0, 1))


def test_lecun_normal_init_has_variance_one_over_fan_in_and_zero_bias():
    from aesweep.models.model import AutoEncoder, initialise

    torch.manual_seed(0)
    ae = AutoEncoder("mlp", (1, 28, 28), 10, settings={"widths": [2000, 2000]}, init="lecun_normal")
    first, second = ae.backbone.encoder[1], ae.backbone.encoder[3]
    assert first.weight.var().item() * 784 == pytest.approx(1.0, abs=0.01)
    assert second.weight.var().item() * 2000 == pytest.approx(1.0, abs=0.01)
    assert first.weight.abs().max().item() <= 2 * (1 / 784) ** 0.5 / 0.87962566103423978 + 1e-6  # truncated at 2 std
    assert all(m.bias.abs().max() == 0 for m in ae.modules() if isinstance(m, nn.Linear))
    # PyTorch's own default for the same layer: variance 1 / (3 fan_in), biases not zero.
    torch_default = AutoEncoder("mlp", (1, 28, 28), 10, settings={"widths": [2000, 2000]})
    assert torch_default.backbone.encoder[1].weight.var().item() * 784 == pytest.approx(1 / 3, abs=0.01)
    # A transposed conv's fan_in is its input channels x kernel (Flax's), not PyTorch's output-side count.
    up = nn.ConvTranspose2d(64, 4, 4)
    initialise(up, "lecun_normal")
    assert up.weight.var().item() * 64 * 16 == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="known: torch, lecun_normal"):
        initialise(up, "xavier")


def test_conv_explicit_blocks_001_four_blocks_three_upsamplings():
    bb = nets.build_backbone("conv", (3, 32, 32), 128, channels=[32, 64, 128, 256], strides=[1, 2, 2, 2])
    assert len([m for m in bb.encoder.modules() if isinstance(m, nn.Conv2d)]) == 4
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in bb.decoder.modules()) == 3
    assert bb.decoder(torch.randn(2, 128)).shape == (2, 3, 32, 32)


def test_conv_pads_freyface_20_wide_images():
    bb = nets.build_backbone("conv", (1, 28, 20), 4, width=0.125)
    assert bb.encoder[0](torch.rand(2, 1, 28, 20)).shape == (2, 1, 32, 24)
    assert bb.decoder(torch.randn(2, 4)).shape == (2, 1, 28, 20)


@pytest.mark.parametrize("in_shape", SHAPES, ids=["28x28x1", "32x32x3"])
def test_skip_decoder_receives_encoder_maps_of_the_same_resolution(in_shape):
    bb = nets.build_backbone("conv", in_shape, 8, width=0.25, skip_connections=True)
    bb.eval()
    x = torch.rand(3, *in_shape)
    feature, maps = bb.encode(x)
    assert torch.equal(feature, bb.encoder(x))  # the feature (and so z) is the plain encoder's
    # Default layout at 32x32 padded: decoder stages output 8x8, 16x16, 32x32 and get blocks 5, 3 and 1's maps.
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 8, 8), (32, 16, 16), (16, 32, 32)]
    fuses = [f for f in bb.decoder.fuses if not isinstance(f, nn.Identity)]
    assert [f[0].in_channels for f in fuses] == [32 + 64, 16 + 32, in_shape[0] + 16]
    z = torch.randn(3, 8)
    with torch.no_grad():
        full = bb.decode(z, maps)
        assert full.shape == x.shape
        # The maps reach the output: change one, keep z, and the reconstruction changes.
        assert not torch.allclose(full, bb.decode(z, (maps[0], maps[1], torch.zeros_like(maps[2]))))
        # Without maps (a prior sample) the decoder sees zeros.
        assert torch.equal(bb.decode(z), bb.decode(z, tuple(torch.zeros_like(m) for m in maps)))


def test_skip_taps_never_the_raw_input():
    # All blocks strided: no encoder block outputs the full resolution, so the last stage gets no map.
    bb = nets.build_backbone("conv", (3, 32, 32), 8, channels=[8, 16, 32], skip_connections=True)
    _, maps = bb.encode(torch.rand(2, 3, 32, 32))
    assert maps[-1] is None and [tuple(m.shape[1:]) for m in maps[:-1]] == [(16, 8, 8), (8, 16, 16)]
    assert bb.decode(torch.randn(2, 8), maps).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name,settings,field,message", [
    ("conv", {"widths": [256]}, "widths", "widths is not a setting of backbone conv"),
    ("mlp", {"channels": [32]}, "channels", "channels is not a setting of backbone mlp"),
    ("resnet", {"skip_connections": True}, "skip_connections", "not a setting of backbone resnet"),
    ("conv", {"strides": [2, 2]}, "strides", "strides needs channels"),
    ("conv", {"channels": [8, 16], "strides": [2]}, "strides", "1 strides for 2 channels"),
    ("conv", {"channels": [8, 16], "strides": [1, 1]}, "strides", "at least one block must have stride 2"),
    ("conv", {"channels": [8, 16], "strides": [2, 3]}, "strides", "strides are 1 or 2"),
])
def test_setting_problems_name_the_field(name, settings, field, message):
    found = backbones.setting_problems(name, None, settings)
    assert found and found[0][0] == field and message in found[0][1]
    with pytest.raises(backbones.SettingError, match=message):
        nets.build_backbone(name, (3, 32, 32), 8, **settings)


def test_depth_conflicts_with_explicit_layouts():
    assert backbones.setting_problems("conv", 2, {"channels": [8, 16]})[0][0] == "depth"
    assert backbones.setting_problems("mlp", 3, {"widths": [64]})[0][0] == "depth"
