"""Batches on the device: index batches that cover an epoch, uint8 -> float, corruption, two augmented views."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aesweep.data import batches as batches_mod
from aesweep.data.datasets import load_dataset
from aesweep.spec.trial import DatasetConfig

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]




@pytest.mark.parametrize("device", DEVICES)
def test_batches_stay_on_device_and_cover_the_epoch(device):
    ds = load_dataset(DatasetConfig(name="shapes", train_size=1000, val_fraction=0.1, seed=0), device=device)
    split = ds.train
    assert split.images.device.type == device and ds.test.factors.device.type == device
    gen = torch.Generator(device=device).manual_seed(0)
    batches = list(batches_mod.iterate_batches(split, 128, shuffle=True, generator=gen))
    assert [len(b) for b in batches] == [128] * 7 + [900 - 7 * 128]
    for b in batches:
        assert b.images.device.type == device and b.images.dtype == torch.uint8 and b.images.shape[1:] == (1, 28, 28)
        assert torch.equal(b.labels, b.factors[:, 0].long())  # rows stay aligned
    seen = torch.cat([b.factors for b in batches]).cpu()
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, split.factors.cpu().tolist()))
    assert not torch.equal(seen, split.factors.cpu())  # actually shuffled
    # the same seed gives the same order, the next epoch another
    again = torch.cat([b.factors for b in batches_mod.iterate_batches(
        split, 128, shuffle=True, generator=torch.Generator(device=device).manual_seed(0))])
    assert torch.equal(again.cpu(), seen)
    nxt = torch.cat([b.factors for b in batches_mod.iterate_batches(split, 128, shuffle=True, generator=gen)])
    assert not torch.equal(nxt.cpu(), seen)
    # in order and drop_last
    ordered = list(batches_mod.iterate_batches(split, 128, shuffle=False, drop_last=True))
    assert len(ordered) == 7 and torch.equal(torch.cat([b.images for b in ordered]), split.images[:896])
    index = list(batches_mod.batch_indices(10, 4, shuffle=True, device=device))
    assert [len(i) for i in index] == [4, 4, 2] and index[0].device.type == device
    assert sorted(torch.cat(index).tolist()) == list(range(10))


@pytest.mark.parametrize("device", DEVICES)
def test_to_float(device):
    images = torch.arange(256, dtype=torch.uint8, device=device).reshape(4, 1, 8, 8)
    x = batches_mod.to_float(images)
    assert x.dtype == torch.float32 and x.device.type == device and x.shape == images.shape
    assert x.min() == 0 and x.max() == 1 and torch.equal(x * 255, images.float())
    with pytest.raises(TypeError):
        batches_mod.to_float(x)


@pytest.mark.parametrize("device", DEVICES)
def test_corrupt(device):
    x = torch.full((64, 1, 28, 28), 0.5, device=device)
    assert batches_mod.corrupt(x, 0.0) is x
    noisy = batches_mod.corrupt(x, 0.1, torch.Generator(device=device).manual_seed(0))
    assert noisy.device.type == device and noisy.shape == x.shape and noisy.dtype == x.dtype
    assert abs(noisy.std().item() - 0.1) < 0.005 and abs(noisy.mean().item() - 0.5) < 0.005
    assert torch.equal(noisy, batches_mod.corrupt(x, 0.1, torch.Generator(device=device).manual_seed(0)))
    big = batches_mod.corrupt(x, 3.0, torch.Generator(device=device).manual_seed(1))
    assert big.min() == 0 and big.max() == 1  # clipped to [0, 1]


def matching_transform(view: torch.Tensor, image: torch.Tensor, pad: int) -> tuple[int, int, bool] | None:
    """The (dy, dx, flipped) for which ``view`` is a crop of the zero-padded ``image``, or None."""
    h, w = image.shape[-2:]
    padded = F.pad(image, (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flipped in (False, True):
                if torch.equal(view, crop.flip(-1) if flipped else crop):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("device", DEVICES)
def test_two_views_are_crops_and_flips(device):
    x = torch.rand(48, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    v1, v2 = batches_mod.two_views(x, flip=True, jitter=0.0, generator=torch.Generator(device=device).manual_seed(0))
    views, images = torch.cat([v1, v2]).cpu(), torch.cat([x, x]).cpu()
    found = [matching_transform(v, img, pad=4) for v, img in zip(views, images, strict=True)]
    assert all(f is not None for f in found)  # every view is a padded crop, maybe flipped, of its image
    flipped = sum(f[2] for f in found) / len(found)
    assert 0.3 < flipped < 0.7
    assert len({f[:2] for f in found}) > 20  # offsets vary
    v3, _ = batches_mod.two_views(x, flip=False, jitter=0.0, generator=torch.Generator(device=device).manual_seed(1))
    found = [matching_transform(v, img, pad=4) for v, img in zip(v3.cpu(), x.cpu(), strict=True)]
    assert all(f is not None and not f[2] for f in found)  # flip=False never flips
    # 28x28 pads 3 by default
    small = torch.rand(16, 1, 28, 28, device=device)
    view, _ = batches_mod.two_views(small, flip=False, jitter=0.0)
    assert all(matching_transform(v, img, pad=3) is not None for v, img in zip(view.cpu(), small.cpu(), strict=True))


def test_two_views_without_crop_or_jitter_are_the_image_and_jitter_moves_every_pixel_alike():
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    v1, v2 = batches_mod.two_views(x, flip=False, pad=0, jitter=0.0)
    assert torch.equal(v1, x) and torch.equal(v2, x)  # pad 0: the crop is the image itself
    j1, _ = batches_mod.two_views(x, flip=False, pad=0, jitter=0.2, generator=torch.Generator().manual_seed(3))
    # contrast then brightness: per image an affine map of the pixels, a * x + b, with |a - 1| <= 0.2
    for view, img in zip(j1, x, strict=True):
        a, b = torch.linalg.lstsq(torch.stack([img.flatten(), torch.ones(img.numel())], 1),
                                  view.flatten()[:, None]).solution.flatten()
        assert torch.allclose(view, a * img + b, atol=1e-5) and abs(a - 1) <= 0.2 + 1e-6
    assert not torch.equal(j1, x)


@pytest.mark.parametrize("device", DEVICES)
def test_resized_crop_magnifies_a_window_of_the_asked_area(device):
    """On a ramp image (value = column fraction + row fraction, apart) every resized crop is a ramp over a
    sub-window: monotone along both axes, and its spans in x and y multiply to an area in [min_scale, 1] (up to
    the bilinear edge pixel); smaller min_scale gives smaller windows on average."""
    h, w = 28, 28
    cols = torch.linspace(0, 1, w).expand(h, w)
    rows = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.stack([cols, rows])[None].expand(256, 2, h, w).contiguous().to(device)
    assert batches_mod.resized_crop(x, 1.0) is x
    mean_area = {}
    for min_scale in (0.08, 0.5):
        v = batches_mod.resized_crop(x, min_scale, torch.Generator(device=device).manual_seed(0)).cpu()
        assert v.shape == x.shape and v.dtype == x.dtype
        assert (v.diff(dim=-1)[:, 0] >= -1e-6).all() and (v.diff(dim=-2)[:, 1] >= -1e-6).all()
        span_x = v[:, 0, :, -1].mean(1) - v[:, 0, :, 0].mean(1)
        span_y = v[:, 1, -1, :].mean(1) - v[:, 1, 0, :].mean(1)
        # each side spans its fraction of the image minus one pixel's worth: (s * W - 1) / (W - 1)
        area = ((span_x * (w - 1) + 1) / w) * ((span_y * (h - 1) + 1) / h)
        assert area.min() > min_scale * 0.95 and area.max() <= 1 + 1e-5
        mean_area[min_scale] = area.mean().item()
    assert mean_area[0.08] < mean_area[0.5] < 0.95
    again = batches_mod.resized_crop(x, 0.08, torch.Generator(device=device).manual_seed(0)).cpu()
    assert torch.equal(again, batches_mod.resized_crop(x, 0.08, torch.Generator(device=device).manual_seed(0)).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_two_views_reproducible_distinct_in_range(device):
    x = batches_mod.to_float(load_dataset(DatasetConfig(name="shapes", train_size=64, val_fraction=0),
                                   device=device).train.images)
    v1, v2 = batches_mod.two_views(x, flip=True, generator=torch.Generator(device=device).manual_seed(7))
    w1, w2 = batches_mod.two_views(x, flip=True, generator=torch.Generator(device=device).manual_seed(7))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.equal(v1, v2)
    assert (v1 - v2).abs().flatten(1).amax(1).gt(0).float().mean() > 0.9  # nearly every pair differs
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == torch.float32 and v.device.type == device
        assert v.min() >= 0 and v.max() <= 1
    # jitter moves intensities: a binary image no longer is
    assert not set(v1.unique().tolist()) <= {0.0, 1.0}


def test_k_folds_partition_the_train_subset_and_each_fold_validates_once():
    k, n = 5, 503
    folds = [load_dataset(DatasetConfig(name="shapes", train_size=n, test_size=50, folds=k, fold=f))
             for f in range(k)]
    rows = lambda split: {bytes(img.numpy()) for img in split.images}  # noqa: E731 - shapes are unique images
    vals = [rows(d.val) for d in folds]
    assert sorted(len(v) for v in vals) == [100, 100, 101, 101, 101]  # near-equal slices
    assert set().union(*vals) == rows(folds[0].train) | vals[0]  # together: the whole train subset
    assert sum(len(v) for v in vals) == n  # and disjoint
    for d, v in zip(folds, vals, strict=True):
        assert not (rows(d.train) & v) and len(d.train) + len(d.val) == n
    assert rows(folds[0].test) == rows(folds[3].test)  # the test split does not depend on the fold
    with pytest.raises(ValueError, match="fold 5 is not one of the 5 folds"):
        DatasetConfig(name="shapes", folds=5, fold=5)
