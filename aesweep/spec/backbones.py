"""The backbones' rules without PyTorch: which settings each takes, what combinations it rejects, its layout.

``nets.py`` builds the backbones and imports torch (about 2 CPU s and 0.6 GB with the CUDA wheel); the spec's
validation only needs the rules, so they live here, torch-free, and ``nets.py`` re-exports them. The built-in
backbones' rules are the rows of ``BUILTIN``; ``nets.py``'s factories take their ``settings`` and ``check`` from
those rows (``builtin``), so the table and the factories cannot disagree. A backbone registered elsewhere declares
its rules with ``@accepts(...)`` and is looked up in ``registry.BACKBONES``.

Each row also gives a lower bound of the backbone's weight count from its shapes alone (``Rules.weights``), so
``capacity`` can reject an absurd model in microseconds, without importing torch.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aesweep import registry

Shape = tuple[int, int, int]

# Stage channels of the conv AE of the CIFAR-10 latent study and of ResNet-18, before the width multiplier.
CONV_CHANNELS = (64, 128, 256)
RESNET_CHANNELS = (64, 128, 256, 512)

# Every backbone option a spec may set (``model.<name>``); None there means "the backbone's default".
SETTINGS = ("widths", "decoder_widths", "channels", "strides", "skip_connections", "dropout", "output_activation")


class SettingError(ValueError):
    """An inconsistent backbone setting; ``field`` names the ``model.<field>`` to blame."""

    def __init__(self, field: str, message: str):
        super().__init__(f"model.{field}: {message}")
        self.field, self.message = field, message


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


# --------------------------------------------------------------------------------------------------------------
# conv


def _check_conv(depth: int | None = None, channels: Sequence[int] | None = None,
                strides: Sequence[int] | None = None, dropout: float | None = None, **_: Any) -> None:
    """Raise SettingError for an inconsistent conv layout (see ``nets.conv``)."""
    if channels is None:
        if strides is not None:
            raise SettingError("strides", "strides needs channels (one stride per block of channels)")
        if depth is not None and depth < 0:
            raise SettingError("depth", f"conv backbone: depth must be >= 0, got {depth}")
    else:
        if depth is not None:
            raise SettingError("depth", "depth and channels are both set; with channels, list every block "
                               "(and its stride in strides) instead of depth")
        if not channels:
            raise SettingError("channels", "channels needs at least one block")
        if strides is not None:
            if len(strides) != len(channels):
                raise SettingError("strides", f"{len(strides)} strides for {len(channels)} channels; give one "
                                   "stride per block")
            if any(s not in (1, 2) for s in strides):
                raise SettingError("strides", f"strides are 1 or 2, got {list(strides)}")
            if 2 not in strides:
                raise SettingError("strides", "at least one block must have stride 2 (each stride-2 block is "
                                   "one transposed-conv stage of the decoder)")
    if dropout is not None and not 0 <= dropout < 1:
        raise SettingError("dropout", f"dropout is a probability in [0, 1), got {dropout}")


def conv_layout(depth: int | None = None, channels: Sequence[int] | None = None,
                strides: Sequence[int] | None = None, width: float = 1.0) -> tuple[list[int], list[int]]:
    """The conv encoder's blocks: ``(channels, strides)``, one entry per Conv3x3+BN+ReLU block.

    Without ``channels``: the CIFAR-10 latent study's layout, three stages (64, 128, 256), each ``depth``
    (default 1) stride-1 blocks then one stride-2 block. With ``channels``: exactly those blocks, with
    ``strides`` (default: every block stride 2). Channels are scaled by ``width``.
    """
    _check_conv(depth=depth, channels=channels, strides=strides)
    if channels is None:
        d = 1 if depth is None else int(depth)
        chans = [ch for ch in CONV_CHANNELS for _ in range(d + 1)]
        strs = [s for _ in CONV_CHANNELS for s in [1] * d + [2]]
    else:
        chans = list(channels)
        strs = list(strides) if strides is not None else [2] * len(chans)
    return [_scaled(c, width) for c in chans], strs


def _pad_to(in_shape: Shape, multiple: int = 8) -> tuple[int, int, int, int]:
    """Zero padding (left, right, top, bottom) that brings H and W up to the next multiple of ``multiple``.

    k stride-2 stages divide the side by 2^k; with three, 28x28 becomes 32x32 (2 px each side) and so reaches the
    same 4x4 grid as CIFAR-10 (FreyFace's 28x20 becomes 32x24, a 4x3 grid). Zero is the background of MNIST-like
    data, so the padding adds no spurious content.
    """
    _, h, w = in_shape
    ph, pw = -h % multiple, -w % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def _grid(in_shape: Shape, k: int) -> int:
    """Cells of the map after k stride-2 blocks (the input padded to a multiple of 2^k)."""
    left, right, top, bottom = _pad_to(in_shape, 2**k)
    return ((in_shape[1] + top + bottom) >> k) * ((in_shape[2] + left + right) >> k)


def _conv_weights(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None, *,
                  channels: Sequence[int] | None = None, strides: Sequence[int] | None = None,
                  **_: Any) -> tuple[int, int]:
    """``(weights floor, feature_dim)`` of ``nets.conv``: the encoder's 3x3 conv weights and the decoder's
    Linear from z (latent_dim -> the feature's shape). In closed form for the default layout, so that an absurd
    depth costs nothing to bound."""
    if channels is None:
        d = 1 if depth is None else int(depth)
        prev, weights = in_shape[0], 0
        for ch in (_scaled(c, width) for c in CONV_CHANNELS):  # per stage: prev -> ch, then d blocks ch -> ch
            weights += 9 * (prev * ch + d * ch * ch)
            prev = ch
        k = len(CONV_CHANNELS)
    else:
        chans, strs = conv_layout(None, channels, strides, width)
        weights = 9 * sum(a * b for a, b in zip([in_shape[0], *chans], chans, strict=False))
        prev, k = chans[-1], strs.count(2)
    feature_dim = prev * _grid(in_shape, k)
    return weights + latent_dim * feature_dim, feature_dim


# --------------------------------------------------------------------------------------------------------------
# mlp


def mlp_widths(d_x: int, d_z: int, n_layers: int) -> list[int]:
    """Layer widths of the beta-VAE study's MLP encoder: ``D_i = D_x - floor((D_x - D_z) * i / n_layers)``.

    Returns ``[D_1, ..., D_n]``; the last one equals ``D_z`` (it is the bottleneck layer). The study's eq. (1)
    prints a ceiling, but the parameter counts of its Tables 3-8 are those of the floor (AE, 3 layers, D_z = 2 on
    784 pixels: 1,100,668 with widths [524, 263]; the ceiling gives [523, 262] and 1,097,520), so the counts
    are followed here. Exact integer arithmetic.
    """
    if not 1 <= n_layers <= 8:
        raise ValueError(f"mlp backbone: depth (number of layers) must be in 1..8, got {n_layers}")
    return [d_x - ((d_x - d_z) * i) // n_layers for i in range(1, n_layers + 1)]


def _check_mlp(depth: int | None = None, widths: Sequence[int] | None = None,
               decoder_widths: Sequence[int] | None = None, dropout: float | None = None, **_: Any) -> None:
    if widths is not None and depth is not None:
        raise SettingError("depth", "depth and widths are both set; widths gives the hidden layers "
                           "(depth = len(widths) + 1), drop depth")
    if widths is None and depth is not None and not 1 <= depth <= 8:
        raise SettingError("depth", f"mlp backbone: depth (number of layers) must be in 1..8, got {depth}")
    if dropout is not None and not 0 <= dropout < 1:
        raise SettingError("dropout", f"dropout is a probability in [0, 1), got {dropout}")


def mlp_hidden(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None,
               widths: Sequence[int] | None = None,
               decoder_widths: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """The hidden widths of ``nets.mlp``: ``(encoder's, decoder's)``, after the width multiplier."""
    d_x = math.prod(in_shape)
    formula = list(widths) if widths is not None else mlp_widths(d_x, latent_dim, 2 if depth is None else depth)[:-1]
    hidden = [_scaled(d, width) for d in formula]
    dec_hidden = [_scaled(d, width) for d in decoder_widths] if decoder_widths is not None else hidden[::-1]
    return hidden, dec_hidden


def _mlp_weights(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None, *,
                 widths: Sequence[int] | None = None, decoder_widths: Sequence[int] | None = None,
                 **_: Any) -> tuple[int, int]:
    """``(weights, feature_dim)`` of ``nets.mlp``: every Linear weight (biases left out), encoder and decoder."""
    d_x = math.prod(in_shape)
    hidden, dec_hidden = mlp_hidden(in_shape, latent_dim, width, depth, widths, decoder_widths)
    enc, dec = [d_x, *hidden], [latent_dim, *dec_hidden, d_x]
    weights = sum(a * b for a, b in zip(enc, enc[1:], strict=False)) + sum(
        a * b for a, b in zip(dec, dec[1:], strict=False))
    return weights, enc[-1]


# --------------------------------------------------------------------------------------------------------------
# resnet


def _check_resnet(depth: int | None = None, **_: Any) -> None:
    if depth is not None and depth < 1:
        raise SettingError("depth", f"resnet backbone: depth (blocks per stage) must be >= 1, got {depth}")


def _resnet_weights(in_shape: Shape, latent_dim: int, width: float = 1.0, depth: int | None = None,
                    **_: Any) -> tuple[int, int]:
    """``(weights floor, feature_dim)`` of ``nets.resnet``: the stem's and the BasicBlocks' 3x3 conv weights
    (shortcuts left out) and the conv decoder's Linear from z."""
    d = 2 if depth is None else int(depth)
    chans = [_scaled(c, width) for c in RESNET_CHANNELS]
    prev, weights = chans[0], 9 * in_shape[0] * chans[0]
    for ch in chans:  # per stage: the first block prev -> ch -> ch, then d - 1 blocks ch -> ch -> ch
        weights += 9 * (prev * ch + ch * ch + (d - 1) * 2 * ch * ch)
        prev = ch
    weights += latent_dim * _scaled(CONV_CHANNELS[-1], width) * _grid(in_shape, len(CONV_CHANNELS))
    return weights, prev


# --------------------------------------------------------------------------------------------------------------
# The table, and the lookups the spec and nets.py use.


@dataclass(frozen=True)
class Rules:
    """A backbone's rules: ``settings`` it takes, ``check(depth=..., **settings)`` raising SettingError, and
    ``weights(in_shape, latent_dim, width, depth, **settings) -> (weights floor, feature_dim)``."""

    settings: frozenset[str]
    check: Callable[..., None] | None = None
    weights: Callable[..., tuple[int, int]] | None = None


BUILTIN: dict[str, Rules] = {
    "conv": Rules(frozenset({"channels", "strides", "skip_connections", "dropout", "output_activation"}),
                  _check_conv, _conv_weights),
    "mlp": Rules(frozenset({"widths", "decoder_widths", "dropout", "output_activation"}), _check_mlp, _mlp_weights),
    "resnet": Rules(frozenset({"output_activation"}), _check_resnet, _resnet_weights),
}


def accepts(*names: str, check: Callable[..., None] | None = None) -> Callable[[Callable], Callable]:
    """Declare the settings a backbone factory takes, and an optional ``check(depth=..., **settings)``."""
    unknown = set(names) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown backbone setting(s) {sorted(unknown)}; known: {', '.join(SETTINGS)}")

    def mark(factory: Callable) -> Callable:
        factory.settings = frozenset(names)  # type: ignore[attr-defined]
        factory.check = check  # type: ignore[attr-defined]
        return factory

    return mark


def builtin(name: str) -> Callable[[Callable], Callable]:
    """``accepts`` with the settings and check of built-in backbone ``name``'s row of ``BUILTIN``."""
    rules = BUILTIN[name]
    return accepts(*sorted(rules.settings), check=rules.check)


def rules_of(name: str) -> Rules:
    """The rules of backbone ``name``: its row of ``BUILTIN``, else what its registered factory declares."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name not in registry.BACKBONES:
        registry.load_all()
    factory = registry.BACKBONES.get(name)
    return Rules(getattr(factory, "settings", frozenset()), getattr(factory, "check", None))


def setting_problems(name: str, depth: int | None, settings: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` for every setting backbone ``name`` does not take or that its check rejects.

    ``settings``: the ``model.<setting>`` values that are set (not None). The spec's validation calls this (and
    ``untaken`` alone for searched values, whose combination is checked when a trial builds its model).
    """
    rules = rules_of(name)
    found = untaken(name, settings)
    if not found and rules.check is not None:
        try:
            rules.check(depth=depth, **settings)
        except SettingError as err:
            found.append((err.field, err.message))
    return found


def settings_of(model: Any) -> dict[str, Any]:
    """The backbone settings a ModelConfig sets: ``{name: value}`` for each of SETTINGS that is not None."""
    return {k: getattr(model, k) for k in SETTINGS if getattr(model, k) is not None}


def untaken(name: str, settings: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` for every setting in ``settings`` that backbone ``name`` does not take."""
    taken = rules_of(name).settings
    return [(key, f"{key} is not a setting of backbone {name} (its settings: {', '.join(sorted(taken)) or 'none'})")
            for key in settings if key not in taken]
