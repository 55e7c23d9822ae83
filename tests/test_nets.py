"""Backbones: shapes for MNIST-like and CIFAR-like inputs, the published layouts, the MLP width formula."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from aesweep import nets
from aesweep.registry import BACKBONES, UnknownNameError

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
    return [d_x - math.ceil(Fraction((d_x - d_z) * i, n)) for i in range(1, n + 1)]


@pytest.mark.parametrize("d_x", [784, 3072])
@pytest.mark.parametrize("n_layers", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("d_z", [2, 10, 33, 128])
def test_mlp_widths_formula(d_x, n_layers, d_z):
    widths = nets.mlp_widths(d_x, d_z, n_layers)
    assert widths == _widths_reference(d_x, d_z, n_layers)
    assert len(widths) == n_layers and widths[-1] == d_z
    assert widths == sorted(widths, reverse=True)


def test_mlp_widths_known_values():
    # 784 -> 10 in 3 layers: (784 - 10) / 3 = 258 exactly; 784 -> 33 in 2: ceil(751/2) = 376.
    assert nets.mlp_widths(784, 10, 3) == [526, 268, 10]
    assert nets.mlp_widths(784, 33, 2) == [408, 33]


@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_mlp_layers_follow_widths(n_layers):
    in_shape, d_z = (1, 28, 28), 10
    bb = nets.build_backbone("mlp", in_shape, d_z, depth=n_layers)
    widths = nets.mlp_widths(784, d_z, n_layers)
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
