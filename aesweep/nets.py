"""Encoder/decoder backbones, registered by name in ``registry.BACKBONES``.

A backbone factory has the signature ``build(in_shape, latent_dim, width=1.0, depth=None) -> Backbone``:

- ``in_shape``: ``(C, H, W)`` of one image; the decoder returns exactly this shape.
- ``latent_dim``: size of the latent code z that the decoder consumes.
- ``width``: channel / unit multiplier (1.0 = the published layout).
- ``depth``: backbone specific (documented per backbone); None = the backbone's default.

A ``Backbone`` holds an ``encoder`` (image batch ``(B, C, H, W)`` -> flat pre-bottleneck feature
``(B, feature_dim)``) and a ``decoder`` (latent ``(B, latent_dim)`` -> image batch ``(B, C, H, W)`` in [0, 1]
through a Sigmoid). The bottleneck (feature -> z, deterministic or gaussian) is not here: it lives in model.py
so that every backbone shares it, and the encoder's feature stays available to probes next to z.

Adding a backbone is one decorated factory: ``@BACKBONES.register("name")``.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn

from aesweep.registry import BACKBONES

Shape = tuple[int, int, int]

# Stage channels of the conv AE of the CIFAR-10 latent study and of ResNet-18, before the width multiplier.
CONV_CHANNELS = (64, 128, 256)
RESNET_CHANNELS = (64, 128, 256, 512)


class Backbone(nn.Module):
    """An encoder/decoder pair.

    encoder: ``(B, C, H, W) -> (B, feature_dim)``, the flattened (or pooled) pre-bottleneck feature.
    decoder: ``(B, latent_dim) -> (B, C, H, W)``, values in [0, 1].
    """

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, feature_dim: int, in_shape: Shape, latent_dim: int
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.feature_dim = int(feature_dim)
        self.in_shape = tuple(in_shape)
        self.latent_dim = int(latent_dim)


def build_backbone(
    name: str, in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None
) -> Backbone:
    """Build a registered backbone by name; an unknown name raises UnknownNameError listing the known ones."""
    return BACKBONES.get(name)(tuple(in_shape), int(latent_dim), width=float(width), depth=depth)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # Bias is redundant in front of BatchNorm.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Crop(nn.Module):
    """Crop ``(B, C, H', W')`` to ``(B, C, H, W)`` at (top, left): undoes the encoder's zero padding."""

    def __init__(self, top: int, left: int, height: int, width: int):
        super().__init__()
        self.top, self.left, self.height, self.width = top, left, height, width

    def forward(self, x: Tensor) -> Tensor:
        return x[..., self.top : self.top + self.height, self.left : self.left + self.width]


def _pad8(in_shape: Shape) -> tuple[int, int, int, int]:
    """Zero padding (left, right, top, bottom) that brings H and W up to the next multiple of 8.

    Three stride-2 stages divide the side by 8; 28x28 becomes 32x32 (2 px each side) and so reaches the same
    4x4 grid as CIFAR-10. Zero is the background of MNIST-like data, so the padding adds no spurious content.
    """
    _, h, w = in_shape
    ph, pw = -h % 8, -w % 8
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def conv_decoder(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int = 1) -> nn.Sequential:
    """The conv decoder of the CIFAR-10 latent study: Linear -> (256*width, H'/8, W'/8) -> three transposed-conv
    blocks -> Conv2d(C, C, 1, 1) -> Sigmoid.

    Follows the study's sentence "It includes a linear layer that reshapes the latent code to 256 x 4 x 4,
    followed by three transposed convolutional blocks and a final Conv2d(3,3,1,1) with a Sigmoid activation":
    no activation between the Linear and the first transposed conv; a transposed-conv block is
    ConvTranspose2d(4, stride 2, pad 1) + BN + ReLU (a "block" as the study defines the encoder's,
    conv + BatchNorm2d + ReLU); channels 256 -> 128 -> 64 -> C (times width, except the image's C), so that
    the last 1x1 conv maps C to C channels as Conv2d(3,3,1,1) does for CIFAR-10.

    H', W' are H, W padded up to a multiple of 8 (see ``_pad8``); the output is cropped back to exactly
    (H, W). ``depth - 1`` stride-1 conv blocks (the mirror of the encoder's extra blocks) precede each transposed
    block at that stage's input channels; ``depth`` <= 1 gives the study's layout.
    """
    c, h, w = in_shape
    left, right, top, bottom = _pad8(in_shape)
    gh, gw = (h + top + bottom) // 8, (w + left + right) // 8
    chans = [_scaled(ch, width) for ch in reversed(CONV_CHANNELS)]  # 256, 128, 64
    outs = [*chans[1:], c]  # 128, 64, C
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, chans[0] * gh * gw),
        nn.Unflatten(1, (chans[0], gh, gw)),
    ]
    prev = chans[0]
    for ch in outs:
        layers += [_conv_block(prev, prev, 1) for _ in range(max(depth, 1) - 1)]
        layers += [
            nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        prev = ch
    layers += [nn.Conv2d(c, c, 1, stride=1), nn.Sigmoid(), Crop(top, left, h, w)]
    return nn.Sequential(*layers)


@BACKBONES.register("conv")
def conv(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None) -> Backbone:
    """Conv AE of the CIFAR-10 latent study: 3 stages of Conv3x3+BN+ReLU blocks, feature 256*w x H/8 x W/8.

    Stage k (channels 64, 128, 256 times ``width``) is ``depth`` stride-1 blocks, then one stride-2 block.
    ``depth`` = 1 (default) is the study's six-block layout: stride 2 at blocks 2, 4 and 6, channels
    (64, 64, 128, 128, 256, 256); 32x32 inputs end at 256x4x4, a 4096-dim feature. ``depth`` = 0 keeps only
    the downsampling blocks. Inputs whose side is not a multiple of 8 are zero-padded to the next one
    (28x28 -> 32x32, 2 px each side) and the decoder crops its output back: a 28x28 image is reconstructed
    as exactly 28x28.
    """
    depth = 1 if depth is None else int(depth)
    if depth < 0:
        raise ValueError(f"conv backbone: depth must be >= 0, got {depth}")
    c, h, w = in_shape
    left, right, top, bottom = _pad8(in_shape)
    layers: list[nn.Module] = (
        [nn.ZeroPad2d((left, right, top, bottom))] if left + right + top + bottom else []
    )
    prev = c
    for ch in (_scaled(x, width) for x in CONV_CHANNELS):
        for _ in range(depth):
            layers.append(_conv_block(prev, ch, 1))
            prev = ch
        layers.append(_conv_block(prev, ch, 2))
        prev = ch
    layers.append(nn.Flatten())
    feature_dim = prev * ((h + top + bottom) // 8) * ((w + left + right) // 8)
    return Backbone(
        nn.Sequential(*layers),
        conv_decoder(in_shape, latent_dim, width, depth),
        feature_dim,
        in_shape,
        latent_dim,
    )


def mlp_widths(d_x: int, d_z: int, n_layers: int) -> list[int]:
    """Layer widths of the beta-VAE study's MLP encoder: ``D_i = D_x - ceil((D_x - D_z) * i / n_layers)``.

    Returns ``[D_1, ..., D_n]``; the last one equals ``D_z`` (it is the bottleneck layer). Exact integer
    arithmetic: ``ceil(a / b) == -((-a) // b)``.
    """
    if not 1 <= n_layers <= 8:
        raise ValueError(f"mlp backbone: depth (number of layers) must be in 1..8, got {n_layers}")
    return [d_x - (-((-(d_x - d_z) * i) // n_layers)) for i in range(1, n_layers + 1)]


@BACKBONES.register("mlp")
def mlp(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None) -> Backbone:
    """Fully connected AE of the beta-VAE study; ``depth`` = number of layers n (1..8, default 2).

    Widths follow ``mlp_widths(D_x, D_z, n)`` = [D_1, ..., D_n = D_z]. The encoder is Flatten and the hidden
    Linear+ReLU layers D_x -> D_1 -> ... -> D_{n-1}; its output (D_{n-1} units, the flat image when n = 1) is
    the pre-bottleneck feature, and the shared bottleneck Linear of model.py is layer n (D_{n-1} -> D_z),
    with no activation on the latent. The decoder mirrors it: D_z -> D_{n-1} -> ... -> D_1 -> D_x, ReLU
    between layers, Sigmoid on the output, reshaped to the image. ``width`` scales the hidden widths
    D_1..D_{n-1} (1.0 = the formula exactly).
    """
    n = 2 if depth is None else int(depth)
    d_x = math.prod(in_shape)
    widths = mlp_widths(d_x, latent_dim, n)
    hidden = [_scaled(d, width) for d in widths[:-1]]
    enc: list[nn.Module] = [nn.Flatten()]
    for a, b in pairwise([d_x, *hidden]):
        enc += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    dec_dims = [latent_dim, *reversed(hidden), d_x]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(dec_dims)):
        dec += [nn.Linear(a, b), nn.Sigmoid() if i == len(dec_dims) - 2 else nn.ReLU(inplace=True)]
    dec.append(nn.Unflatten(1, tuple(in_shape)))
    return Backbone(
        nn.Sequential(*enc), nn.Sequential(*dec), hidden[-1] if hidden else d_x, in_shape, latent_dim
    )


class BasicBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 conv+BN, identity (or 1x1 conv+BN) shortcut, ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


@BACKBONES.register("resnet")
def resnet(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None) -> Backbone:
    """ResNet-18-style encoder for small images, with the conv decoder so that a recon term still works.

    The CIFAR adaptation of ResNet-18: a 3x3 stride-1 stem and no max-pool, four stages of BasicBlocks with
    channels (64, 128, 256, 512) times ``width`` and strides (1, 2, 2, 2), ``depth`` blocks per stage (default
    2, i.e. ResNet-18), then global average pooling: the feature is 512*width. Any input size works (28x28
    ends on a 4x4 map before pooling). The decoder is ``conv_decoder`` at the same width, default depth.
    """
    depth = 2 if depth is None else int(depth)
    if depth < 1:
        raise ValueError(f"resnet backbone: depth (blocks per stage) must be >= 1, got {depth}")
    chans = [_scaled(ch, width) for ch in RESNET_CHANNELS]
    layers: list[nn.Module] = [
        nn.Conv2d(in_shape[0], chans[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(chans[0]),
        nn.ReLU(inplace=True),
    ]
    prev = chans[0]
    for ch, stride in zip(chans, (1, 2, 2, 2), strict=True):
        for b in range(depth):
            layers.append(BasicBlock(prev, ch, stride if b == 0 else 1))
            prev = ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Backbone(
        nn.Sequential(*layers), conv_decoder(in_shape, latent_dim, width), prev, in_shape, latent_dim
    )
