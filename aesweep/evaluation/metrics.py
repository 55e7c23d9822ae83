"""Reconstruction metrics, registered by name in ``registry.METRICS`` and measured in one batched pass.

Every metric is a function ``fn(x_hat, x) -> (B,)``: one value per image, computed on that image alone, on the
tensors' device. ``x_hat`` (the reconstruction) and ``x`` (the target) are float ``(B, C, H, W)`` in [0, 1]. A
split's ``test/<name>`` is the mean over its images of the per-image values, so summing per-image values over
batches gives exactly the number a single all-at-once call would give, whatever the batch size.

Conventions (each one chosen to match a reference that tests compare against):

- mse, rmse, mae: per-pixel means over C, H, W. ``rmse`` is sqrt of the image's MSE, so the split value is the
  mean per-image RMSE (<= sqrt of the split MSE, by Jensen), as a per-image loop over the test set reports it.
- psnr: ``10 log10(1 / MSE)`` in dB, data range 1, per image (torchmetrics). A perfect image has infinite PSNR;
  it is capped at ``PSNR_CAP_DB`` = 100 dB (MSE 1e-10), the same convention as ``train.evaluate_split``'s
  ``val/psnr``, so a split mean is never inf or NaN. No imperfect 8-bit image comes near the cap: one grey level
  wrong in one pixel of a 28x28 image is 77 dB.
- ssim: torchmetrics' SSIM map with a Gaussian window (sigma 1.5, 11 taps), data range 1, K1 0.01, K2 0.03,
  averaged over the *valid* region only (a border of 5 pixels cropped), which is what
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1)`` computes; channels are averaged. torchmetrics' own reduction averages over the reflect-padded
  border too and differs from scikit-image by up to 0.3 on 28x28 images.
- uqi: Wang & Bovik's universal quality index (SSIM with K1 = K2 = 0) with the same Gaussian window and valid
  region as torchmetrics' ``universal_image_quality_index``, but with the reference implementation's handling
  of degenerate windows: both windows flat -> ``2 mu_x mu_y / (mu_x^2 + mu_y^2)`` (1 when both are black).
  torchmetrics returns 0 there (0 / eps), which scores an image against itself at 0.15-0.6 on the shapes data
  (black background) instead of 1. Computed in float64 so that "flat" can be tested with a tight tolerance.
- uqi_block8: the same index with Wang & Bovik's own window (their 2002 letter and MATLAB code
  ``img_qi.m``): a uniform 8x8 block slid one pixel at a time over the valid region ((H-7) x (W-7) windows),
  Q averaged over the windows; the same flat-window rule as ``uqi``. Channels are averaged.
- ergas: torchmetrics' ERGAS ``100 / ratio * sqrt(mean_c (RMSE_c / mean(x_c))^2)`` with ``ratio`` =
  ``eval.ergas_ratio``, default ``ERGAS_RATIO`` = 1: a reconstruction has its input's resolution
  (torchmetrics' default 4 is the pan-sharpening resolution ratio and divides every value by 4). Undefined
  (inf, or NaN for a perfect reconstruction) for a target channel that is entirely black; no image of the
  shipped datasets is.
- bce: binary cross-entropy of x_hat as Bernoulli means against x as soft targets, mean over pixels (torch's
  ``binary_cross_entropy``, logs clamped at -100). Not 0 for a perfect reconstruction unless x is binary.
- bce_bits: the same cross-entropy summed over the C*H*W pixels of the image and converted to bits (divided by
  ln 2): the "Reconstruction Error (bits)" of the AE-vs-VAE study (002), whose eq. (6) writes the BCE as a sum
  over the d input dimensions. ``bce_bits = bce * C*H*W / ln 2``.

Metrics with options: ``METRIC_OPTIONS`` maps a metric to the keyword arguments it takes and the EvalConfig field
each comes from; ``configured(eval_cfg)`` gives the ``{name: kwargs}`` that ``MetricAccumulator`` and
``reconstruction_metrics`` accept in place of a list of names.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aesweep.data.batches import iterate_batches, to_float
from aesweep.data.datasets import Split
from aesweep.registry import METRICS

if TYPE_CHECKING:
    from aesweep.spec.trial import EvalConfig

# torchmetrics' formulas are written out here rather than imported: its import (scipy.signal and friends,
# 1.5-7 s on 2 cores depending on load) was the largest part of a Ray worker's first evaluation. The tests compare
# every one of them with torchmetrics or scikit-image.

__all__ = [
    "ALL_METRICS", "ERGAS_RATIO", "METRIC_OPTIONS", "PSNR_CAP_DB", "SSIM_SIGMA", "UQI_BLOCK", "MetricAccumulator",
    "bce", "bce_bits", "configured", "ergas", "mae", "mse", "psnr", "reconstruction_metrics", "rmse", "ssim", "uqi",
    "uqi_block8", "val_metrics",
]

PSNR_CAP_DB = 100.0
ERGAS_RATIO = 1.0
SSIM_SIGMA = 1.5
UQI_BLOCK = 8  # Wang & Bovik's block size
# scikit-image's window for gaussian_weights: truncate 3.5 sigma -> radius int(3.5 * 1.5 + 0.5) = 5, 11 taps.
_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)
# UQI: a window whose summed local variances (summed squared means) fall below this is flat (black). Float64 cancellation error in E[x^2] - E[x]^2 is
# ~1e-17, while the smallest real variance of an 8-bit window (one grey level at a corner tap) is ~1e-11.
_FLAT = 1e-13


def _check(x_hat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    if x_hat.shape != x.shape or x.ndim != 4:
        raise ValueError(f"metrics expect two (B, C, H, W) tensors of one shape, got {tuple(x_hat.shape)} "
                         f"and {tuple(x.shape)}")
    # Metrics in float32 at least, whatever precision the decoder ran in.
    return x_hat.float() if x_hat.dtype != torch.float64 else x_hat, x.float() if x.dtype != torch.float64 else x


@METRICS.register("mse")
def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per image, (B,)."""
    x_hat, x = _check(x_hat, x)
    return (x_hat - x).pow(2).flatten(1).mean(1)


@METRICS.register("rmse")
def rmse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Root mean squared error per image (sqrt of that image's MSE), (B,)."""
    return mse(x_hat, x).sqrt()


@METRICS.register("mae")
def mae(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean absolute error per image, (B,)."""
    x_hat, x = _check(x_hat, x)
    return (x_hat - x).abs().flatten(1).mean(1)


@METRICS.register("psnr")
def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image in dB (data range 1), capped at 100 dB for a perfect image, (B,).

    torchmetrics' ``peak_signal_noise_ratio(data_range=1, dim=(1, 2, 3), reduction="none")``, written out."""
    return (-10 * torch.log10(mse(x_hat, x))).clamp(max=PSNR_CAP_DB)


@METRICS.register("ssim")
def ssim(x_hat: Tensor, x: Tensor) -> Tensor:
    """Structural similarity per image (Gaussian window sigma 1.5, data range 1, as scikit-image), (B,).

    torchmetrics' formula (K1 0.01, K2 0.03, population covariances) on its valid region, computed here from
    ``_local_means`` in float64 (torchmetrics' 121-tap convolution cost 5 s per 10k CIFAR images on 2 cores)."""
    x_hat, x = _check(x_hat, x)
    a, b = x_hat.double(), x.double()
    mu_a, mu_b, e_aa, e_bb, e_ab = _local_means(torch.stack([a, b, a * a, b * b, a * b]))
    c1, c2 = 0.01**2, 0.03**2  # (K * data range)^2
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    full = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return full.flatten(1).mean(1).to(x.dtype)


def _band(n: int, g: Tensor) -> Tensor:
    """(n, n - len(g) + 1): column j holds the taps ``g`` at rows j..j+len(g)-1, so ``v @ band`` is the valid
    correlation of v's last axis with g."""
    m = n - len(g) + 1
    band = torch.zeros(n, m, dtype=g.dtype, device=g.device)
    cols = torch.arange(m, device=g.device)
    for t, tap in enumerate(g):
        band[cols + t, cols] = tap
    return band


def _local_means(maps: Tensor, taps: Tensor | None = None) -> Tensor:
    """Local means of every (H, W) map of ``maps (..., H, W)`` over the valid region under the separable window
    ``taps`` (1-D, summing to 1; default the Gaussian of sigma 1.5, 11 taps), (..., H - k + 1, W - k + 1). For the
    Gaussian that is exactly the region torchmetrics keeps after its border crop.

    The window is the outer product of a 1-D window with itself, so the filter is two banded matrix products
    (columns, then rows): the same numbers up to rounding, at BLAS speed even in float64, where the 121-tap
    depthwise convolution took ~25 s per 10k CIFAR-sized images on 2 cores."""
    if taps is None:
        t = torch.arange(-_RADIUS, _RADIUS + 1, dtype=maps.dtype, device=maps.device)
        taps = torch.exp(-(t**2) / (2 * SSIM_SIGMA**2))
        taps = taps / taps.sum()
    taps = taps.to(maps.dtype).to(maps.device)
    h, w = maps.shape[-2:]
    return _band(h, taps).T @ (maps @ _band(w, taps))


@METRICS.register("uqi")
def uqi(x_hat: Tensor, x: Tensor) -> Tensor:
    """Universal quality index per image (Gaussian window, flat windows as in Wang & Bovik's code), (B,)."""
    return _uqi(x_hat, x, None)


@METRICS.register("uqi_block8")
def uqi_block8(x_hat: Tensor, x: Tensor) -> Tensor:
    """Universal quality index per image with Wang & Bovik's sliding 8x8 uniform block (their code), (B,)."""
    x_hat, x = _check(x_hat, x)
    if min(x.shape[-2:]) < UQI_BLOCK:
        raise ValueError(f"uqi_block8 needs images of at least {UQI_BLOCK}x{UQI_BLOCK}, got {tuple(x.shape[-2:])}")
    return _uqi(x_hat, x, torch.full((UQI_BLOCK,), 1.0 / UQI_BLOCK, dtype=torch.float64))


def _uqi(x_hat: Tensor, x: Tensor, taps: Tensor | None) -> Tensor:
    """Q per window under the window ``taps`` (see ``_local_means``), averaged per image, (B,)."""
    x_hat, x = _check(x_hat, x)
    a, b = x_hat.double(), x.double()
    stats = _local_means(torch.stack([a, b, a * a, b * b, a * b]), taps)
    mu_a, mu_b = stats[0], stats[1]
    var_a = (stats[2] - mu_a**2).clamp_min(0)
    var_b = (stats[3] - mu_b**2).clamp_min(0)
    cov = stats[4] - mu_a * mu_b
    mean_term = mu_a**2 + mu_b**2
    var_term = var_a + var_b
    flat, lit = var_term <= _FLAT, mean_term > _FLAT
    ones = torch.ones_like(var_term)
    full = 4 * cov * mu_a * mu_b / (var_term * mean_term).where(~flat & lit, ones)
    luminance = 2 * mu_a * mu_b / mean_term.where(lit, ones)  # both windows flat: only the luminance term is left
    # Both windows black (or, impossible for images in [0, 1], zero means with some variance): 1, as the reference.
    q = torch.where(lit, torch.where(flat, luminance, full), ones)
    return q.flatten(1).mean(1).to(x.dtype)


@METRICS.register("ergas")
def ergas(x_hat: Tensor, x: Tensor, ratio: float = ERGAS_RATIO) -> Tensor:
    """ERGAS per image: 100 / ratio * relative RMSE per channel, root-mean-square over channels (ratio
    ``eval.ergas_ratio``, default 1), (B,).

    torchmetrics' ``error_relative_global_dimensionless_synthesis(ratio=ratio, reduction="none")``, written out."""
    if not ratio > 0:
        raise ValueError(f"ergas ratio must be positive, got {ratio}")
    x_hat, x = _check(x_hat, x)
    rmse_c = (x_hat - x).pow(2).flatten(2).mean(2).sqrt()  # (B, C)
    return 100 / ratio * (rmse_c / x.flatten(2).mean(2)).pow(2).mean(1).sqrt()


@METRICS.register("bce")
def bce(x_hat: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy per image (x_hat as Bernoulli means, x as soft targets), mean over pixels, (B,)."""
    x_hat, x = _check(x_hat, x)
    return F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).mean(1)


@METRICS.register("bce_bits")
def bce_bits(x_hat: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy per image summed over its pixels, in bits (the AE-vs-VAE study's table), (B,)."""
    x_hat, x = _check(x_hat, x)
    return F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1) / math.log(2)


# The default metrics (EvalConfig.metrics), in the order tables print them. uqi_block8 and bce_bits are opt-in.
ALL_METRICS = ("mse", "rmse", "mae", "psnr", "ssim", "uqi", "ergas", "bce")

# metric -> {keyword argument: EvalConfig field it is read from}. Data, not a branch: a metric with a knob adds
# its row here and reads the knob as a keyword argument.
METRIC_OPTIONS: dict[str, dict[str, str]] = {
    "ergas": {"ratio": "ergas_ratio"},
}


def configured(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """``{name: keyword arguments}`` for every metric of ``cfg.metrics``, in order, options read from ``cfg``."""
    return {name: {arg: getattr(cfg, field) for arg, field in METRIC_OPTIONS.get(name, {}).items()}
            for name in cfg.metrics}


class MetricAccumulator:
    """Sums per-image metric values over batches; ``compute`` gives the exact mean over all images seen.

    The sums stay on the batches' device in float64 (no host sync per batch, no drift over 10^4 images); the only
    synchronisation is the one in ``compute``.
    """

    def __init__(self, names: Iterable[str] | Mapping[str, Mapping[str, Any]]):
        """names: metric names, or ``{name: keyword arguments}`` (``configured(eval_cfg)``)."""
        options = names if isinstance(names, Mapping) else {name: {} for name in names}
        self.fns = {name: METRICS.get(name) for name in options}  # unknown names fail here, listing the known ones
        self.options = {name: dict(kwargs) for name, kwargs in options.items()}
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def update(self, x_hat: Tensor, x: Tensor) -> None:
        """Add one batch: ``x_hat`` and ``x`` float (B, C, H, W) in [0, 1]."""
        with torch.no_grad():  # called from a training loop, the sums must not keep every batch's graph alive
            for name, fn in self.fns.items():
                total = fn(x_hat, x, **self.options[name]).double().sum()
                self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.count += x.shape[0]

    def compute(self, prefix: str = "test") -> dict[str, float]:
        """``{"<prefix>/<name>": mean over images}``; NaN for every metric when no image was seen."""
        if self.count == 0:
            return {f"{prefix}/{name}": float("nan") for name in self.fns}
        names = list(self.sums)
        values = (torch.stack([self.sums[n] for n in names]) / self.count).tolist()
        return {f"{prefix}/{n}": float(v) for n, v in zip(names, values, strict=True)}


def reconstruction_metrics(
    model: nn.Module, split: Split, names: Sequence[str] | Mapping[str, Mapping[str, Any]] = ALL_METRICS,
    batch_size: int = 256, prefix: str = "test"
) -> dict[str, float]:
    """Reconstruct every image of ``split`` and measure it: ``{"<prefix>/<name>": mean over images}``.
    ``names``: metric names or ``{name: keyword arguments}`` (``configured(eval_cfg)``).

    The model runs in eval mode (a gaussian bottleneck decodes its mean) under ``torch.inference_mode`` on the
    model's device, on clean inputs (a denoising model is measured on what it reconstructs from clean images);
    its training mode is restored afterwards. One pass over the split in order, ``batch_size`` images at a time.
    """
    acc = MetricAccumulator(names)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in iterate_batches(split, batch_size, shuffle=False):
                x = to_float(batch.images.to(device, non_blocking=True))
                acc.update(model(x).x_hat, x)
    finally:
        model.train(was_training)
    return acc.compute(prefix)


def val_metrics(model: nn.Module, split: Split, batch_size: int = 256) -> dict[str, float]:
    """The cheap per-epoch pair: ``{"val/mse", "val/psnr"}`` on ``split``."""
    return reconstruction_metrics(model, split, ("mse", "psnr"), batch_size, prefix="val")
