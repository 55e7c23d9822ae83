"""Encoder/decoder backbones, registered by name in ``registry.BACKBONES``.

A backbone factory has the signature ``build(in_shape, latent_dim, width=1.0, depth=None, **settings) -> Backbone``:

- ``in_shape``: ``(C, H, W)`` of one image; the decoder returns exactly this shape.
- ``latent_dim``: size of the latent code z that the decoder consumes.
- ``width``: channel / unit multiplier (1.0 = the published layout); it scales explicit widths and channels too.
- ``depth``: backbone specific (documented per backbone); None = the backbone's default.
- ``settings``: the backbone's own options (``SETTINGS``: widths, channels, strides, dropout, ...), each
  ``model.<name>`` in the spec. A factory declares which it accepts (``accepts``), so that the spec can reject
  ``widths`` on a conv backbone with the file and line, and may declare a ``check`` that raises ``SettingError``
  for an inconsistent combination (strides without channels, ...) before anything is built.

A ``Backbone`` holds an ``encoder`` (image batch ``(B, C, H, W)`` -> flat pre-bottleneck feature
``(B, feature_dim)``) and a ``decoder`` (latent ``(B, latent_dim)`` -> image batch ``(B, C, H, W)`` in [0, 1]
through the output activation). The bottleneck (feature -> z, deterministic or gaussian) is not here: it lives in
model.py so that every backbone shares it, and the encoder's feature stays available to probes next to z. A
skip-connection backbone also hands encoder feature maps to its decoder: ``Backbone.encode`` returns them and
``Backbone.decode`` takes them.

Adding a backbone is one decorated factory: ``@BACKBONES.register("name")`` over ``@accepts(...)``. The rules
of the built-in ones (settings, checks, layouts) are torch-free, in ``backbone_rules.py``, so that validating a
spec imports no torch; they are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from aesweep.registry import BACKBONES
from aesweep.spec.backbones import (
    CONV_CHANNELS,
    RESNET_CHANNELS,
    SettingError,
    Shape,
    _check_mlp,
    _pad_to,
    _scaled,
    builtin,
    conv_layout,
    mlp_hidden,
    setting_problems,
)


class HalfTanh(nn.Module):
    """(1 + tanh(x)) / 2: a Tanh output layer for images in [0, 1].

    The classification-guided study (004) ends its decoder with Tanh on inputs "normalized to a similar range"
    ([-1, 1]); aesweep's images are in [0, 1], and x01 = (x + 1) / 2 maps one setting onto the other exactly
    (an MSE 4x, an MAE 2x smaller in these units). Mathematically this is sigmoid(2x).
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x).add(1).mul(0.5)


class LinearOutput(nn.Module):
    """A linear output: the identity while training, clamped to [0, 1] in eval mode.

    The AE of the shapes study (002) is "almost identical to the VAE model", whose decoder "outputs a single
    scalar" per pixel (a logit in eq. 6), with "the modified MSE loss" on it: an unbounded output under MSE. A
    sigmoid there kept that AE (dropout 0.2, latent noise 0.2) at the mean image (docs/studies.md, 002). In
    eval mode the output is projected onto the pixel range, as the PCA baseline's reconstructions are, so every
    metric, sample and figure sees an image; the projection can only lower the MSE to a target in [0, 1].
    """

    def forward(self, x: Tensor) -> Tensor:
        return x if self.training else x.clamp(0, 1)


# Keyed, in order, by spec.trial.OUTPUT_ACTIVATIONS, the names the spec accepts (tests hold them equal).
OUTPUT_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": HalfTanh,
                                                          "linear": LinearOutput}


class Backbone(nn.Module):
    """An encoder/decoder pair.

    encoder: ``(B, C, H, W) -> (B, feature_dim)``, the flattened (or pooled) pre-bottleneck feature.
    decoder: ``(B, latent_dim) -> (B, C, H, W)``, values in [0, 1].
    skip_taps: for a skip-connection backbone, one entry per decoder stage: the index of the encoder layer whose
      output that stage receives (None: no map at that resolution); empty for every other backbone.
    """

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, feature_dim: int, in_shape: Shape, latent_dim: int,
        skip_taps: Sequence[int | None] = (),
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.feature_dim = int(feature_dim)
        self.in_shape = tuple(in_shape)
        self.latent_dim = int(latent_dim)
        self.skip_taps = tuple(skip_taps)

    def encode(self, x: Tensor) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """``(feature (B, feature_dim), maps)``; maps: one per decoder stage (None where it gets none)."""
        if not self.skip_taps:
            return self.encoder(x), ()
        wanted = {i for i in self.skip_taps if i is not None}
        outputs: dict[int, Tensor] = {}
        h = x
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i in wanted:
                outputs[i] = h
        return h, tuple(outputs[i] if i is not None else None for i in self.skip_taps)

    def decode(self, z: Tensor, maps: Sequence[Tensor | None] = ()) -> Tensor:
        """z ``(B, latent_dim)`` [+ the encoder maps of ``encode``] -> ``(B, C, H, W)`` in [0, 1]."""
        return self.decoder(z, tuple(maps)) if self.skip_taps else self.decoder(z)


def build_backbone(
    name: str, in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None, **settings: Any
) -> Backbone:
    """Build a registered backbone by name; an unknown name raises UnknownNameError listing the known ones.

    ``settings`` with a None value are left out (None = the backbone's default); any other setting the backbone
    does not take, or that its check rejects, raises SettingError.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    problems = setting_problems(name, depth, settings)
    if problems:
        raise SettingError(*problems[0])
    return BACKBONES.get(name)(tuple(in_shape), int(latent_dim), width=float(width), depth=depth, **settings)


def _conv_block(c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> nn.Sequential:
    # Bias is redundant in front of BatchNorm. Dropout2d drops whole feature maps (neighbouring pixels of one map
    # are too correlated for elementwise dropout to regularise).
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class Crop(nn.Module):
    """Crop ``(B, C, H', W')`` to ``(B, C, H, W)`` at (top, left): undoes the encoder's zero padding."""

    def __init__(self, top: int, left: int, height: int, width: int):
        super().__init__()
        self.top, self.left, self.height, self.width = top, left, height, width

    def forward(self, x: Tensor) -> Tensor:
        return x[..., self.top : self.top + self.height, self.left : self.left + self.width]


def _decoder_parts(in_shape: Shape, latent_dim: int, down: Sequence[int], extra_blocks: int, dropout: float,
                   output_activation: str, skip_channels: Sequence[int | None] | None = None
                   ) -> tuple[list[nn.Module], list[nn.Sequential], list[nn.Module], list[nn.Module]]:
    """(head, stages, fuses, tail) of the conv decoder; see ``conv_decoder``."""
    c, h, w = in_shape
    k = len(down)
    left, right, top, bottom = _pad_to(in_shape, 2**k)
    gh, gw = (h + top + bottom) >> k, (w + left + right) >> k
    head: list[nn.Module] = [nn.Linear(latent_dim, down[-1] * gh * gw), nn.Unflatten(1, (down[-1], gh, gw))]
    outs = [*reversed(down[:-1]), c]
    stages: list[nn.Sequential] = []
    fuses: list[nn.Module] = []
    prev = down[-1]
    for i, ch in enumerate(outs):
        last = i == len(outs) - 1
        layers: list[nn.Module] = [_conv_block(prev, prev, 1, dropout) for _ in range(extra_blocks)]
        if last:
            # The stage that outputs the image's C channels is a bare transposed conv (with bias) into the
            # Conv2d(C, C, 1) + output activation: BatchNorm + ReLU on a C-channel map (C = 1 for grey images)
            # zero half of it, and the 1x1 conv's weight must then change sign through zero whenever its
            # initial draw inverts the image: study 000's AE on Fashion-MNIST crawled from MSE 0.28 at ~4% an
            # epoch and ended its 50 epochs worse than PCA (docs/results, fmnist-000-converged).
            layers.append(nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1))
        else:
            layers += [nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch),
                       nn.ReLU(True)]
        if dropout > 0 and not last:
            layers.append(nn.Dropout2d(dropout))
        stages.append(nn.Sequential(*layers))
        skip = skip_channels[i] if skip_channels is not None else None
        # The stage's upsampled map concatenated with the encoder's map of the same resolution, fused back to
        # the stage's channels by one Conv3x3+BN+ReLU block.
        fuses.append(_conv_block(ch + skip, ch, 1) if skip else nn.Identity())
        prev = ch
    tail: list[nn.Module] = [nn.Conv2d(c, c, 1, stride=1), OUTPUT_ACTIVATIONS[output_activation](),
                             Crop(top, left, h, w)]
    return head, stages, fuses, tail


def conv_decoder(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int = 1, *,
                 down: Sequence[int] | None = None, dropout: float = 0.0,
                 output_activation: str = "sigmoid") -> nn.Sequential:
    """The conv decoder of the CIFAR-10 latent study: Linear -> (256*width, H'/8, W'/8) -> three transposed-conv
    blocks -> Conv2d(C, C, 1, 1) -> Sigmoid.

    Follows the study's sentence "It includes a linear layer that reshapes the latent code to 256 x 4 x 4,
    followed by three transposed convolutional blocks and a final Conv2d(3,3,1,1) with a Sigmoid activation":
    no activation between the Linear and the first transposed conv; a transposed-conv block is
    ConvTranspose2d(4, stride 2, pad 1) + BN + ReLU (a "block" as the study defines the encoder's,
    conv + BatchNorm2d + ReLU), except the last, which outputs the image's C channels: a bare ConvTranspose2d
    (with bias) straight into the 1x1 conv (BN + ReLU there trained an order of magnitude slower, see the
    comment in ``_decoder_parts``); channels 256 -> 128 -> 64 -> C (times width, except the image's C), so
    that the last 1x1 conv maps C to C channels as Conv2d(3,3,1,1) does for CIFAR-10.

    H', W' are H, W padded up to a multiple of 8 (see ``_pad_to``); the output is cropped back to exactly
    (H, W). ``depth - 1`` stride-1 conv blocks (the mirror of the encoder's extra blocks) precede each transposed
    block at that stage's input channels; ``depth`` <= 1 gives the study's layout.

    ``down``: the channels after each of the encoder's stride-2 blocks, already scaled (default: 64, 128, 256
    times ``width``); the decoder has one transposed-conv stage per entry, from ``down[-1]`` back to C.
    ``dropout``: Dropout2d after every transposed block but the last. ``output_activation``: sigmoid | tanh
    (``HalfTanh``).
    """
    down = [_scaled(ch, width) for ch in CONV_CHANNELS] if down is None else list(down)
    head, stages, _, tail = _decoder_parts(in_shape, latent_dim, down, max(depth, 1) - 1, dropout,
                                           output_activation)
    return nn.Sequential(*head, *(m for s in stages for m in s), *tail)


class SkipConvDecoder(nn.Module):
    """The conv decoder whose stages also receive the encoder's feature maps (see ``conv``'s skip_connections).

    forward(z ``(B, latent_dim)``, maps): maps holds one entry per stage, the encoder map of that stage's output
    resolution ``(B, C_enc, H_s, W_s)`` or None where the stage takes none. Missing maps (``maps == ()``, as
    when decoding a prior sample or an interpolated code) are zeros: the decoder then shows what z alone carries.
    """

    def __init__(self, head: list[nn.Module], stages: list[nn.Sequential], fuses: list[nn.Module],
                 tail: list[nn.Module]):
        super().__init__()
        self.head = nn.Sequential(*head)
        self.stages = nn.ModuleList(stages)
        self.fuses = nn.ModuleList(fuses)
        self.tail = nn.Sequential(*tail)

    def forward(self, z: Tensor, maps: Sequence[Tensor | None] = ()) -> Tensor:
        x = self.head(z)
        for i, (stage, fuse) in enumerate(zip(self.stages, self.fuses, strict=True)):
            x = stage(x)
            if isinstance(fuse, nn.Identity):
                continue
            skip = maps[i] if maps else None
            if skip is None:
                first = fuse[0]
                skip = x.new_zeros(x.shape[0], first.in_channels - x.shape[1], *x.shape[2:])
            x = fuse(torch.cat([x, skip], dim=1))
        return self.tail(x)


@BACKBONES.register("conv")
@builtin("conv")
def conv(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None, *,
         channels: Sequence[int] | None = None, strides: Sequence[int] | None = None,
         skip_connections: bool = False, dropout: float = 0.0, output_activation: str = "sigmoid") -> Backbone:
    """Conv AE family: Conv3x3+BN+ReLU encoder blocks, one transposed-conv decoder stage per stride-2 block.

    Default (no ``channels``): the CIFAR-10 latent study's AE. Stage k (channels 64, 128, 256 times ``width``) is
    ``depth`` stride-1 blocks, then one stride-2 block. ``depth`` = 1 (default) is the study's six-block layout:
    stride 2 at blocks 2, 4 and 6, channels (64, 64, 128, 128, 256, 256); 32x32 inputs end at 256x4x4, a
    4096-dim feature. ``depth`` = 0 keeps only the downsampling blocks.

    ``channels`` / ``strides``: the blocks given explicitly (one channel count and stride each; strides default to
    2), e.g. the shallow nets of the paradigms studies: 004's "three convolutional layers with increasing channel
    sizes (32, 64, 128), each followed by batch normalization and ReLU", strided down to 4x4, is
    ``channels: [32, 64, 128], strides: [2, 2, 2]``; 001's CIFAR encoder of "four hidden layers" with "three
    deconvolutional (ConvTranspose2d) hidden layers" in the decoder is four blocks with three of stride 2 (the
    study names neither channels nor strides; e.g. ``channels: [32, 64, 128, 256], strides: [1, 2, 2, 2]``).
    The decoder: Linear -> the last block's channels on the H'/2^k x W'/2^k grid (k stride-2 blocks), then one
    ConvTranspose2d(4, 2, 1)+BN+ReLU per stride-2 block back through the channels those blocks output, ending at
    C (that last one a bare ConvTranspose2d), then Conv2d(C, C, 1) and the output activation (see
    ``conv_decoder``; with explicit channels it has no extra stride-1 blocks: the three studies' decoders are three
    transposed convs).

    Inputs whose side is not a multiple of 2^k are zero-padded to the next one (28x28 -> 32x32, 2 px each side)
    and the decoder crops its output back: a 28x28 image is reconstructed as exactly 28x28.

    ``skip_connections`` (the paradigms study 001's "Autoencoder (skip)"): each decoder stage also receives the
    encoder's feature map of the resolution it outputs (the last encoder block at that resolution; the raw input
    never, and not the deepest map, which is the feature z is computed from), concatenated and fused by a
    Conv3x3+BN+ReLU block, U-Net style. What a probe reads is still z only (``AutoEncoder.embed``): the skip maps
    feed the decoder, never the representation, so probe accuracy measures z exactly as for the plain AE, and
    training through the skips can only change what the encoder learns to put in z. Be aware that the skips let
    the reconstruction bypass z: a low reconstruction error of a skip AE says little about how much z holds, and
    decoding a bare z (prior samples, interpolations) feeds zero maps.

    ``dropout``: Dropout2d after every encoder block and every decoder stage but the last (default 0).
    ``output_activation``: sigmoid (default) | tanh (``HalfTanh``: 004's Tanh output, mapped to [0, 1]) | linear
    (``LinearOutput``: 002's AE).
    """
    chans, strs = conv_layout(depth, channels, strides, width)
    c, h, w = in_shape
    k = strs.count(2)
    left, right, top, bottom = _pad_to(in_shape, 2**k)
    layers: list[nn.Module] = (
        [nn.ZeroPad2d((left, right, top, bottom))] if left + right + top + bottom else []
    )
    prev = c
    factor = 1
    last_at: dict[int, tuple[int, int]] = {}  # downsampling factor -> (encoder layer index, channels)
    for ch, stride in zip(chans, strs, strict=True):
        layers.append(_conv_block(prev, ch, stride, dropout))
        factor *= stride
        last_at[factor] = (len(layers) - 1, ch)
        prev = ch
    layers.append(nn.Flatten())
    down = [chans[i] for i, s in enumerate(strs) if s == 2]
    down[-1] = prev  # stride-1 blocks after the last stride-2 block set the channels the decoder starts from
    feature_dim = prev * ((h + top + bottom) >> k) * ((w + left + right) >> k)
    extra = max(1 if depth is None else int(depth), 1) - 1 if channels is None else 0
    if not skip_connections:
        decoder: nn.Module = conv_decoder(in_shape, latent_dim, depth=extra + 1, down=down, dropout=dropout,
                                          output_activation=output_activation)
        return Backbone(nn.Sequential(*layers), decoder, feature_dim, in_shape, latent_dim)
    # Decoder stage i outputs the resolution of downsampling factor 2^(k-1-i).
    taps = [last_at.get(2 ** (k - 1 - i)) for i in range(k)]
    parts = _decoder_parts(in_shape, latent_dim, down, extra, dropout, output_activation,
                           skip_channels=[t[1] if t else None for t in taps])
    return Backbone(nn.Sequential(*layers), SkipConvDecoder(*parts), feature_dim, in_shape, latent_dim,
                    skip_taps=[t[0] if t else None for t in taps])


def _dense(dims: Sequence[int], dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


@BACKBONES.register("mlp")
@builtin("mlp")
def mlp(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None, *,
        widths: Sequence[int] | None = None, decoder_widths: Sequence[int] | None = None, dropout: float = 0.0,
        output_activation: str = "sigmoid") -> Backbone:
    """Fully connected AE; by default the beta-VAE study's, ``depth`` = number of layers n (1..8, default 2).

    Hidden widths: ``widths`` if given (the encoder's hidden layers, e.g. 001's MNIST AE 784-256-128-z is
    ``widths: [256, 128]``), else ``mlp_widths(D_x, D_z, n)[:-1]``; ``width`` scales them. The encoder is Flatten
    and the hidden Linear+ReLU layers D_x -> D_1 -> ... -> D_{n-1}; its output (D_{n-1} units, the flat image
    when there are none) is the pre-bottleneck feature, and the shared bottleneck Linear of model.py is layer n
    (D_{n-1} -> D_z), with no activation on the latent. The decoder mirrors the hidden widths
    (D_z -> D_{n-1} -> ... -> D_1 -> D_x) unless ``decoder_widths`` gives its own (001's decoder "expand[s] from
    128 to 256 and then to 784": ``decoder_widths: [256]``), ReLU between layers, the output activation (sigmoid
    | tanh) last, reshaped to the image. ``dropout``: nn.Dropout after every hidden ReLU, encoder and decoder
    (the AE-vs-VAE study 002's 0.2 / 0.1).
    """
    _check_mlp(depth=depth, widths=widths, decoder_widths=decoder_widths, dropout=dropout)
    d_x = math.prod(in_shape)
    hidden, dec_hidden = mlp_hidden(in_shape, latent_dim, width, depth, widths, decoder_widths)
    enc: list[nn.Module] = [nn.Flatten(), *_dense([d_x, *hidden], dropout)]
    dec = _dense([latent_dim, *dec_hidden], dropout)
    dec += [nn.Linear(dec_hidden[-1] if dec_hidden else latent_dim, d_x), OUTPUT_ACTIVATIONS[output_activation](),
            nn.Unflatten(1, tuple(in_shape))]
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
@builtin("resnet")
def resnet(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None, *,
           output_activation: str = "sigmoid") -> Backbone:
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
    decoder = conv_decoder(in_shape, latent_dim, width, output_activation=output_activation)
    return Backbone(nn.Sequential(*layers), decoder, prev, in_shape, latent_dim)
