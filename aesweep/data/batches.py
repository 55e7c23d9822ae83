"""Batching by index and device-side transforms: uint8 -> float32 in [0, 1] per batch, Gaussian corruption,
random resized crops, two augmented views for the contrastive objectives. Everything stays on the trial's device.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from aesweep.data.datasets import Split

# torchvision is imported inside the loaders that read its files: importing it pulls in torchvision.models and
# torch._dynamo (~1.5 s of a Ray worker's start-up on 2 cores), which a shapes sweep never needs.

if TYPE_CHECKING:
    pass

# ------------------------------------------------------------------------------------------------------------
# Batching and device-side transforms


def batch_indices(n: int, batch_size: int, *, shuffle: bool, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """int64 index tensors on ``device`` covering ``range(n)`` once per pass, in order or shuffled by
    ``torch.randperm`` on ``device`` (``generator`` must live there). The last short batch is dropped if asked."""
    order = torch.randperm(n, device=device, generator=generator) if shuffle else torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[Split]:
    """One epoch of ``split`` as ``Split`` batches (uint8 images, labels, factors) on the split's device.

    Batches are rows of the device tensors: contiguous views when not shuffled, one gather per batch when
    shuffled (``generator`` must live on the split's device). Nothing crosses the host-device boundary."""
    if shuffle:
        for index in batch_indices(len(split), batch_size, shuffle=True, device=split.device, generator=generator,
                                   drop_last=drop_last):
            yield split[index]
        return
    stop = len(split) - len(split) % batch_size if drop_last else len(split)
    for start in range(0, stop, batch_size):
        yield split[start:start + batch_size]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1], same shape and device (a new tensor)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(255)


def corrupt(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising input: ``x + N(0, sigma^2)`` clipped to [0, 1]. ``x`` float in [0, 1], any shape; noise is drawn
    on x's device from ``generator`` (which must live there). ``sigma == 0`` returns ``x`` itself."""
    if sigma == 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp_(0, 1)


def resized_crop(x: torch.Tensor, min_scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """SimCLR's random resized crop, batched: per image a window of area fraction U(min_scale, 1) and aspect
    ratio log-uniform in [3/4, 4/3] (each side capped at the image's), at a uniform position inside the image,
    resized back to (H, W) bilinearly. ``x`` float (B, C, H, W); the result has x's shape, dtype and device, values
    within x's range. ``min_scale == 1`` returns ``x`` itself."""
    if min_scale >= 1:
        return x
    b, dev = x.shape[0], x.device
    u = torch.rand(4, b, device=dev, generator=generator, dtype=x.dtype)
    area = min_scale + (1 - min_scale) * u[0]
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])  # width / height
    sw, sh = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # sides, fractions of W, H
    # affine_grid's theta maps output coordinates in [-1, 1] into the input: scale by the side, shift the
    # window's centre anywhere that keeps it inside the image.
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = sw, sh
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sw) * (2 * u[2] - 1), (1 - sh) * (2 * u[3] - 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _augment(x: torch.Tensor, flip: bool, generator: torch.Generator | None, pad: int, jitter: float,
             scale: float) -> torch.Tensor:
    x = resized_crop(x, scale, generator)
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))  # zeros: the crop may show black borders, as in the usual recipe
    dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip:  # flip folded into the crop's column index: one gather does both
        flipped = torch.rand(b, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], w - 1 - cols, cols)
    rows = dy[:, None] + torch.arange(h, device=dev)
    cols = dx[:, None] + cols
    out = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    if jitter > 0:
        u = torch.rand(2, b, 1, 1, 1, device=dev, generator=generator, dtype=x.dtype) * 2 - 1  # U(-1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * (1 + jitter * u[0]) + mean + jitter * u[1]  # contrast, then brightness
    return out.clamp_(0, 1)


def two_views(x: torch.Tensor, *, flip: bool, generator: torch.Generator | None = None, pad: int | None = None,
              jitter: float = 0.2, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of a float batch ``x`` (B, C, H, W) in [0, 1], each (B, C, H, W) in [0, 1]
    on x's device: if ``scale`` is set, a random resized crop of area fraction U(scale, 1) (``resized_crop``,
    SimCLR's); then a random crop after zero padding (``pad`` px; default min(H, W) // 8: 4 for 32x32, 3 for
    28x28), horizontal flip with probability 0.5 if ``flip``, contrast and brightness jitter of +-``jitter``.
    Batched gathers, no per-sample loop; every random number comes from ``generator`` (on x's device), so one seed
    gives the same views."""
    pad = max(1, min(x.shape[-2:]) // 8) if pad is None else pad
    scale = 1.0 if scale is None else scale
    return _augment(x, flip, generator, pad, jitter, scale), _augment(x, flip, generator, pad, jitter, scale)

