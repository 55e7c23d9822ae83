"""Reconstruction metrics: scikit-image / torchmetrics / torch agree, known answers, one batched pass is exact."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.functional.image import (
    error_relative_global_dimensionless_synthesis,
    universal_image_quality_index,
)

from aesweep.data.batches import to_float
from aesweep.data.datasets import Split, load_dataset
from aesweep.evaluation import metrics
from aesweep.models.model import AutoEncoder
from aesweep.registry import METRICS, UnknownNameError
from aesweep.spec.trial import DatasetConfig, EvalConfig

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> torch.Tensor:
    """48 real Fashion-MNIST test images, float (48, 1, 28, 28) in [0, 1]."""
    if not (REAL_FASHION / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    cfg = DatasetConfig(name="fashion_mnist", root=str(tmp_path_factory.mktemp("data")), download=False,
                        train_size=10, test_size=48, val_fraction=0)
    return to_float(load_dataset(cfg).test.images)


@pytest.fixture(scope="module")
def shapes() -> torch.Tensor:
    """Shapes test images: binary, mostly black background (the degenerate case for UQI)."""
    ds = load_dataset(DatasetConfig(name="shapes", train_size=50, test_size=40, val_fraction=0))
    return to_float(ds.test.images)


def blur(x: torch.Tensor) -> torch.Tensor:
    """3x3 box blur, same shape."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), torch.full((c, 1, 3, 3), 1 / 9), groups=c)


def noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def sk_reference(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image SSIM and PSNR from scikit-image (float64, channel axis 0)."""
    ssim, psnr = [], []
    for a, b in zip(x_hat.double().numpy(), x.double().numpy(), strict=True):
        ssim.append(sk_ssim(b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
                            channel_axis=0))
        psnr.append(sk_psnr(b, a, data_range=1))
    return np.array(ssim), np.array(psnr)


@pytest.mark.parametrize("distortion", ["noise", "blur", "blur+noise"])
def test_ssim_and_psnr_match_scikit_image_on_real_images(fashion, distortion):
    x_hat = {"noise": lambda x: noisy(x, 0.1), "blur": blur, "blur+noise": lambda x: noisy(blur(x), 0.05)}[
        distortion](fashion)
    ref_ssim, ref_psnr = sk_reference(x_hat, fashion)
    assert ref_ssim.min() < 0.95  # a real distortion, not a near-identity
    np.testing.assert_allclose(metrics.ssim(x_hat, fashion).numpy(), ref_ssim, atol=1e-3, rtol=0)
    np.testing.assert_allclose(metrics.psnr(x_hat, fashion).numpy(), ref_psnr, atol=1e-3, rtol=0)


def test_ssim_and_psnr_match_scikit_image_on_random_rgb():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 3, 32, 32, generator=g)
    x_hat = (0.7 * x + 0.3 * torch.rand(12, 3, 32, 32, generator=g)).clamp(0, 1)
    ref_ssim, ref_psnr = sk_reference(x_hat, x)
    np.testing.assert_allclose(metrics.ssim(x_hat, x).numpy(), ref_ssim, atol=1e-3, rtol=0)
    np.testing.assert_allclose(metrics.psnr(x_hat, x).numpy(), ref_psnr, atol=1e-3, rtol=0)


def test_identical_images_give_the_known_answers(fashion, shapes):
    for x in (fashion, shapes):
        assert torch.equal(metrics.mse(x, x), torch.zeros(len(x)))
        assert torch.equal(metrics.rmse(x, x), torch.zeros(len(x)))
        assert torch.equal(metrics.mae(x, x), torch.zeros(len(x)))
        torch.testing.assert_close(metrics.ssim(x, x), torch.ones(len(x)))
        torch.testing.assert_close(metrics.uqi(x, x), torch.ones(len(x)))
        torch.testing.assert_close(metrics.ergas(x, x), torch.zeros(len(x)))
        # Infinite PSNR is capped: a perfect image scores exactly the cap, never inf or NaN.
        assert torch.equal(metrics.psnr(x, x), torch.full((len(x),), metrics.PSNR_CAP_DB))


def test_rmse_is_the_square_root_of_mse_per_image(fashion):
    x_hat = noisy(fashion, 0.2)
    torch.testing.assert_close(metrics.rmse(x_hat, fashion), metrics.mse(x_hat, fashion).sqrt())
    # Over a split the mean per-image RMSE is at most sqrt(mean MSE) (Jensen), not equal to it.
    assert metrics.rmse(x_hat, fashion).mean() <= metrics.mse(x_hat, fashion).mean().sqrt()


def test_mse_mae_bce_match_torch_references(fashion):
    x_hat = noisy(fashion, 0.2, seed=3).clamp(1e-3, 1 - 1e-3)
    # Equal-sized images: the mean of per-image means is torch's mean over all elements.
    torch.testing.assert_close(metrics.mse(x_hat, fashion).mean(), F.mse_loss(x_hat, fashion))
    torch.testing.assert_close(metrics.mae(x_hat, fashion).mean(), F.l1_loss(x_hat, fashion))
    torch.testing.assert_close(metrics.bce(x_hat, fashion).mean(), F.binary_cross_entropy(x_hat, fashion))
    torch.testing.assert_close(metrics.bce(x_hat[:1], fashion[:1])[0], F.binary_cross_entropy(x_hat[:1], fashion[:1]))


def test_psnr_formula_per_image():
    x = torch.zeros(2, 1, 16, 16)
    x_hat = x.clone()
    x_hat[0] += 0.1  # MSE 0.01 -> 20 dB
    x_hat[1] += 0.01  # MSE 1e-4 -> 40 dB
    torch.testing.assert_close(metrics.psnr(x_hat, x), torch.tensor([20.0, 40.0]))


def test_uqi_matches_torchmetrics_where_no_window_is_flat():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 32, 32, generator=g)
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = universal_image_quality_index(x_hat, x, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(metrics.uqi(x_hat, x), ref, atol=1e-5, rtol=0)


def test_uqi_scores_flat_black_windows_as_the_reference_code(shapes):
    # torchmetrics returns 0 on windows where both images are black (0 / eps): an image against itself scores far
    # below 1 on the shapes data. Wang & Bovik's reference code scores those windows 1.
    assert universal_image_quality_index(shapes, shapes, reduction="none").mean() < 0.8
    torch.testing.assert_close(metrics.uqi(shapes, shapes), torch.ones(len(shapes)))
    # Both windows flat but of different grey levels: only the luminance term 2ab / (a^2 + b^2) is left.
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    torch.testing.assert_close(metrics.uqi(a, b), torch.tensor([2 * 0.2 * 0.6 / (0.2**2 + 0.6**2)]))
    # A reconstruction that loses the shape entirely scores 0 where the target has structure.
    assert metrics.uqi(torch.zeros_like(shapes), shapes).max() < 1


def test_ergas_is_torchmetrics_with_ratio_one(fashion):
    x_hat = noisy(fashion, 0.1)
    ref = error_relative_global_dimensionless_synthesis(x_hat, fashion, ratio=1.0, reduction="none")
    torch.testing.assert_close(metrics.ergas(x_hat, fashion), ref)
    # ratio 1: 100 * RMSE / mean(x) for one channel.
    x = torch.full((1, 1, 8, 8), 0.5)
    torch.testing.assert_close(metrics.ergas(x + 0.05, x), torch.tensor([10.0]))


def test_every_metric_is_registered_and_in_the_default_config():
    assert set(metrics.ALL_METRICS) <= set(METRICS.names())
    assert set(EvalConfig().metrics) == set(metrics.ALL_METRICS)
    for name in metrics.ALL_METRICS:
        assert METRICS.doc(name), name  # `aesweep list` prints one line per metric
    with pytest.raises(UnknownNameError, match="known: .*ssim"):
        metrics.MetricAccumulator(["ssim", "lpips"])


@pytest.fixture(scope="module")
def model_and_split():
    ds = load_dataset(DatasetConfig(name="shapes", train_size=50, test_size=60, val_fraction=0))
    torch.manual_seed(0)
    model = AutoEncoder("conv", (1, 28, 28), 4, width=0.125)
    return model, ds.test


def test_batched_split_mean_equals_the_all_at_once_mean(model_and_split):
    model, split = model_and_split
    model.eval()
    with torch.inference_mode():
        x = to_float(split.images)
        x_hat = model(x).x_hat
    whole = {f"test/{n}": METRICS.get(n)(x_hat, x).double().mean().item() for n in metrics.ALL_METRICS}
    model.train()
    for batch_size in (16, 256):  # 60 images: three full batches and a short one; one batch
        got = metrics.reconstruction_metrics(model, split, metrics.ALL_METRICS, batch_size=batch_size)
        assert list(got) == [f"test/{n}" for n in metrics.ALL_METRICS]
        for key, value in whole.items():
            assert math.isfinite(got[key]), key
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, batch_size)
    assert model.training  # the caller's mode is restored


def test_val_metrics_and_an_empty_split(model_and_split):
    model, split = model_and_split
    got = metrics.val_metrics(model, split, batch_size=32)
    assert set(got) == {"val/mse", "val/psnr"}
    assert 0 < got["val/mse"] < 1 and 0 < got["val/psnr"] < metrics.PSNR_CAP_DB
    empty = Split(split.images[:0], split.labels[:0])
    assert all(math.isnan(v) for v in metrics.reconstruction_metrics(model, empty, ["mse"]).values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_metrics_run_on_the_tensors_device(fashion):
    x_hat = noisy(fashion, 0.1)
    for name in metrics.ALL_METRICS:
        fn = METRICS.get(name)
        on_gpu = fn(x_hat.cuda(), fashion.cuda())
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), fn(x_hat, fashion), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# uqi_block8, eval.ergas_ratio, bce_bits


def uqi_block8_reference(x_hat: np.ndarray, x: np.ndarray, block: int = 8) -> float:
    """Wang & Bovik's img_qi.m written out as a loop: every block x block window, Q from sums, their three
    cases (flat with light -> 2 mu_x mu_y / (mu_x^2 + mu_y^2); otherwise the full formula; 1 when both are 0)."""
    h, w = x.shape
    n = block * block
    qs = []
    for i in range(h - block + 1):
        for j in range(w - block + 1):
            a = x[i:i + block, j:j + block].astype(np.float64)
            b = x_hat[i:i + block, j:j + block].astype(np.float64)
            sa, sb = a.sum(), b.sum()
            num = 4 * (n * (a * b).sum() - sa * sb) * sa * sb
            den1 = n * ((a * a).sum() + (b * b).sum()) - sa * sa - sb * sb
            den2 = sa * sa + sb * sb
            if abs(den1) < 1e-9 and den2 != 0:
                qs.append(2 * sa * sb / den2)
            elif abs(den1 * den2) > 1e-12:
                qs.append(num / (den1 * den2))
            else:
                qs.append(1.0)
    return float(np.mean(qs))


def test_uqi_block8_on_a_hand_computed_window():
    # One 8x8 window: x is 0.2 on the top half and 0.6 on the bottom half; y = x + 0.1.
    # mu_x = 0.4, mu_y = 0.5, var_x = var_y = cov = 0.04:
    # Q = 4 * 0.04 * 0.4 * 0.5 / ((0.04 + 0.04) * (0.16 + 0.25)) = 0.032 / 0.0328 = 40 / 41.
    x = torch.full((1, 1, 8, 8), 0.2, dtype=torch.float64)
    x[..., 4:, :] = 0.6
    torch.testing.assert_close(metrics.uqi_block8(x + 0.1, x), torch.tensor([40 / 41], dtype=torch.float64))
    # A 9x8 image (one more row of 0.2 on top) has two windows. Rows 1-8 are the window above (40/41). Rows 0-7
    # hold 5 rows of 0.2 and 3 of 0.6: mu_x = 0.35, mu_y = 0.45, var_x = var_y = cov = 0.16 * 15/64 = 0.0375, so
    # Q = 2 * 0.35 * 0.45 / (0.35^2 + 0.45^2) = 0.315 / 0.325 = 63/65. The image's index is their mean.
    tall = torch.cat([torch.full((1, 1, 1, 8), 0.2, dtype=torch.float64), x], dim=2)
    expected = (63 / 65 + 40 / 41) / 2
    torch.testing.assert_close(metrics.uqi_block8(tall + 0.1, tall), torch.tensor([expected], dtype=torch.float64))
    assert uqi_block8_reference((tall + 0.1)[0, 0].numpy(), tall[0, 0].numpy()) == pytest.approx(expected)
    # Identical images score 1; a constant offset on a flat image keeps only the luminance term.
    assert metrics.uqi_block8(x, x).item() == pytest.approx(1.0)
    flat = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    assert metrics.uqi_block8(flat + 0.25, flat).item() == pytest.approx(2 * 0.5 * 0.75 / (0.25 + 0.5625))


def test_uqi_block8_matches_the_reference_loop(fashion, shapes):
    for x in (fashion[:6], shapes[:6]):  # real images; binary shapes with black (flat) windows
        x_hat = blur(noisy(x, 0.05)).clamp(0, 1)
        ours = metrics.uqi_block8(x_hat, x).double()
        ref = torch.tensor([uqi_block8_reference(a[0], b[0]) for a, b in zip(x_hat.double().numpy(),
                                                                              x.double().numpy(), strict=True)],
                           dtype=torch.float64)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # RGB: the mean of the per-channel values.
    g = torch.Generator().manual_seed(1)
    rgb, rgb_hat = torch.rand(2, 3, 12, 10, generator=g), torch.rand(2, 3, 12, 10, generator=g)
    per_channel = [[uqi_block8_reference(rgb_hat[i, c].numpy(), rgb[i, c].numpy()) for c in range(3)]
                   for i in range(2)]
    torch.testing.assert_close(metrics.uqi_block8(rgb_hat, rgb).double(),
                               torch.tensor(per_channel, dtype=torch.float64).mean(1), atol=1e-5, rtol=0)
    # The 8x8 block is not the Gaussian window: on a blurred image the two indices differ.
    x_hat = blur(fashion[:6])
    assert (metrics.uqi_block8(x_hat, fashion[:6]) - metrics.uqi(x_hat, fashion[:6])).abs().max() > 1e-3
    with pytest.raises(ValueError, match="at least 8x8"):
        metrics.uqi_block8(torch.rand(1, 1, 7, 9), torch.rand(1, 1, 7, 9))


def test_ergas_ratio_divides_the_index_and_reaches_the_accumulator(fashion):
    x = torch.full((1, 1, 8, 8), 0.5)
    torch.testing.assert_close(metrics.ergas(x + 0.05, x, ratio=4.0), torch.tensor([2.5]))
    x_hat = noisy(fashion, 0.1)
    ref = error_relative_global_dimensionless_synthesis(x_hat, fashion, ratio=4.0, reduction="none")
    torch.testing.assert_close(metrics.ergas(x_hat, fashion, ratio=4.0), ref)
    # eval.ergas_ratio is the option the accumulator hands to ergas; the default (1) is today's value.
    assert EvalConfig().ergas_ratio == 1.0
    assert metrics.configured(EvalConfig(metrics=["mse", "ergas"], ergas_ratio=4)) == {
        "mse": {}, "ergas": {"ratio": 4.0}}
    default, by_four = (metrics.MetricAccumulator(metrics.configured(EvalConfig(metrics=["ergas"], ergas_ratio=r)))
                        for r in (1, 4))
    for acc in (default, by_four):
        acc.update(x_hat, fashion)
    assert by_four.compute()["test/ergas"] == pytest.approx(default.compute()["test/ergas"] / 4)
    with pytest.raises(ValueError):
        EvalConfig(ergas_ratio=0)


def test_bce_bits_is_the_per_image_cross_entropy_sum_in_bits(fashion):
    # x_hat = 0.5 everywhere: every pixel costs exactly one bit, whatever the target.
    half = torch.full_like(fashion[:4], 0.5)
    torch.testing.assert_close(metrics.bce_bits(half, fashion[:4]), torch.full((4,), 784.0))
    # bits = mean BCE in nats * pixels / ln 2.
    x_hat = blur(fashion).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(metrics.bce_bits(x_hat, fashion), metrics.bce(x_hat, fashion) * 784 / math.log(2))
    assert "bce_bits" in METRICS and "uqi_block8" in METRICS
    assert METRICS.doc("bce_bits") and METRICS.doc("uqi_block8")
