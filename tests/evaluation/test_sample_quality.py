"""Sample quality: PRDC equal to the reference ``prdc`` package, FID equal to the scipy formula (pytorch-fid's) and to
torchmetrics', known answers, the ex-post latent mixture, then whole trials through ``run_trial``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from aesweep.data import datasets
from aesweep.evaluation import generative as gen
from aesweep.evaluation import sample_quality as sq
from aesweep.spec.load import parse_spec
from aesweep.spec.trial import DatasetConfig
from aesweep.training.train import run_trial

# (real rows, fake rows, features): equal and unequal sizes, more features than rows, a 3-d cloud.
SHAPES = [(200, 150, 16), (500, 500, 64), (300, 400, 3), (60, 80, 100)]


def gaussian(n: int, f: int, seed: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, size=(n, f))


# --------------------------------------------------------------------------------------------------------------
# PRDC against the reference implementation (Naeem et al.'s own package)


@pytest.mark.parametrize("n, m, f", SHAPES)
@pytest.mark.parametrize("k", [1, 5])
def test_prdc_equals_the_reference_package(n, m, f, k):
    prdc_ref = pytest.importorskip("prdc")
    real, fake = gaussian(n, f, 0), gaussian(m, f, 1, mean=0.3, std=1.2)
    expected = prdc_ref.compute_prdc(real, fake, nearest_k=k)
    got = sq.prdc(torch.from_numpy(real), torch.from_numpy(fake), k, chunk_elems=5_000)  # many blocks
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-6), key
    assert sq.prdc(torch.from_numpy(real), torch.from_numpy(fake), k) == got  # blocks change nothing


def test_prdc_on_float32_features_equals_the_reference_on_the_same_values():
    prdc_ref = pytest.importorskip("prdc")
    real, fake = gaussian(300, 32, 2).astype(np.float32), gaussian(250, 32, 3, std=0.8).astype(np.float32)
    expected = prdc_ref.compute_prdc(real, fake, nearest_k=5)
    got = sq.prdc(torch.from_numpy(real), torch.from_numpy(fake), 5)
    for key in expected:
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-6), key


def test_prdc_of_identical_sets_is_one_and_of_far_apart_sets_zero():
    x = torch.from_numpy(gaussian(200, 8, 0))
    same = sq.prdc(x, x[torch.randperm(200, generator=torch.Generator().manual_seed(0))], 5)
    assert (same["precision"], same["recall"], same["coverage"]) == (1.0, 1.0, 1.0)
    # Each real ball holds its centre and its k - 1 nearest neighbours strictly inside: N k memberships over N
    # points, density 1. Its k-th neighbour sits exactly on the radius, where the round-off of the permuted
    # copy's distances can tip a few of those N boundary cases inside (here 1).
    assert same["density"] == pytest.approx(1.0, abs=5e-3)
    far = sq.prdc(x, x + 100.0, 5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_kth_neighbour_distance_is_the_kth_nearest_other_row():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert sq.kth_neighbour_distance(x, 1).tolist() == pytest.approx([1.0, 1.0, 2.0, 4.0])
    assert sq.kth_neighbour_distance(x, 2).tolist() == pytest.approx([3.0, 2.0, 3.0, 6.0])
    with pytest.raises(ValueError, match="more than k rows"):
        sq.kth_neighbour_distance(x, 4)


# --------------------------------------------------------------------------------------------------------------
# FID against independent computations


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's calculate_frechet_distance, written out: scipy's sqrtm of sigma1 sigma2 (real part)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("n, m, f", SHAPES[:3])
def test_fid_equals_the_scipy_formula_and_torchmetrics(n, m, f):
    real, fake = gaussian(n, f, 0), gaussian(m, f, 1, mean=0.3, std=1.2)
    got = sq.fid(torch.from_numpy(real), torch.from_numpy(fake))
    mu1, s1, mu2, s2 = real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    assert got == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    mu, sigma = sq.gaussian_fit(torch.from_numpy(real))
    np.testing.assert_allclose(mu.numpy(), mu1, atol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), s1, atol=1e-12)
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    reference = tm_fid._compute_fid(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2)))
    assert got == pytest.approx(float(reference), rel=1e-9, abs=1e-9)


def test_fid_with_fewer_samples_than_features_matches_torchmetrics():
    # Singular covariances (60 rows, 100 features): no eps offset is needed by the eigendecompositions.
    real, fake = gaussian(60, 100, 0), gaussian(80, 100, 1, mean=0.2)
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    mu1, s1 = sq.gaussian_fit(torch.from_numpy(real))
    mu2, s2 = sq.gaussian_fit(torch.from_numpy(fake))
    assert sq.fid(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(
        float(tm_fid._compute_fid(mu1, s1, mu2, s2)), rel=1e-7)


def test_fid_known_answers():
    x = torch.from_numpy(gaussian(500, 32, 0))
    assert sq.fid(x, x) == pytest.approx(0.0, abs=1e-8)
    mu = torch.tensor([1.0, -0.5, 2.0, 0.0])  # ||mu||^2 = 5.25
    a = torch.from_numpy(gaussian(50_000, 4, 1))
    b = torch.from_numpy(gaussian(50_000, 4, 2)) + mu
    assert sq.fid(a, b) == pytest.approx(5.25, abs=0.1)
    # Equal means, covariances I and 4 I: Tr(I + 4 I - 2 * 2 I) = d.
    assert sq.fid(a, 2 * torch.from_numpy(gaussian(50_000, 4, 3))) == pytest.approx(4.0, abs=0.1)
    assert sq.frechet_distance(torch.zeros(3), torch.eye(3), torch.ones(3), torch.eye(3)) == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------------------------
# The ex-post latent mixture (generative.LatentMixture / fit_mixture)


def test_a_mixture_samples_each_component_by_its_weight_and_seed():
    means = torch.tensor([[-10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    mixture = gen.LatentMixture(torch.tensor([0.5, 0.3, 0.2]), means, 0.5 * torch.eye(2).expand(3, 2, 2), "test")
    z = mixture.sample(20_000, seed=1)
    assert z.shape == (20_000, 2) and torch.equal(z, mixture.sample(20_000, seed=1))
    component = torch.cdist(z, means).argmin(1)
    assert torch.bincount(component, minlength=3).float().div(len(z)).tolist() == pytest.approx([0.5, 0.3, 0.2],
                                                                                                abs=0.015)
    for k in range(3):
        assert z[component == k].mean(0).tolist() == pytest.approx(means[k].tolist(), abs=0.03)
        assert z[component == k].std(0).tolist() == pytest.approx([0.5, 0.5], abs=0.03)


def test_fit_mixture_recovers_separated_clusters():
    gen_ = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-6.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 6.0]])
    z = torch.cat([c + 0.3 * torch.randn(400, 3, generator=gen_) for c in centres])
    mixture = gen.fit_mixture(z, 3, seed=0)
    order = torch.cdist(centres, mixture.means).argmin(1)
    torch.testing.assert_close(mixture.means[order], centres, atol=0.1, rtol=0)
    assert mixture.weights.tolist() == pytest.approx([1 / 3] * 3, abs=0.01)
    with pytest.raises(ValueError, match="needs at least 5 codes"):
        gen.fit_mixture(z[:4], 5)


# --------------------------------------------------------------------------------------------------------------
# Whole trials


@pytest.fixture(scope="module")
def shapes():
    return datasets.load_dataset(DatasetConfig(name="shapes", train_size=480, test_size=128, val_fraction=0.2))


def tiny(variant: str, sample_quality: str):
    spec = parse_spec(
        "name: tiny\n"
        "dataset: {name: shapes, train_size: 480, test_size: 128, val_fraction: 0.2}\n"
        "model: {backbone: conv, width: 0.125, latent_dim: 8}\n"
        f"objective: {{variant: {variant}}}\n"
        "train: {epochs: 1, batch_size: 32, lr: 3.0e-3}\n"
        "eval: {metrics: [mse], probes: [], clustering: [], figures: [], gen_samples: 64,\n"
        f"       sample_quality: {sample_quality}}}\n"
    )
    return spec.resolve()


def test_a_vae_trial_reports_sample_quality_on_pixels(shapes, tmp_path):
    cfg = tiny("vae", "{features: pixels}")
    result = run_trial(cfg, dataset=shapes, workdir=tmp_path)
    assert result.status == "finished", result.reason
    keys = {f"gen/pixels/{m}" for m in ("fid", "precision", "recall", "density", "coverage")}
    assert keys <= set(result.metrics)
    assert all(math.isfinite(result.metrics[k]) for k in keys)
    assert result.metrics["gen/pixels/fid"] > 0
    assert all(0 <= result.metrics[f"gen/pixels/{m}"] <= 1 for m in ("precision", "recall", "coverage"))
    assert "time/eval/sample_quality_s" in result.metrics


def test_a_deterministic_ae_is_sampled_from_a_gmm_on_its_train_codes(shapes, tmp_path):
    cfg = tiny("ae", "{features: pixels, metrics: [fid], latent_density: gmm, gmm_components: 3}")
    result = run_trial(cfg, dataset=shapes, workdir=tmp_path)
    assert result.status == "finished", result.reason
    assert math.isfinite(result.metrics["gen/pixels/fid"])
    assert not any(k.startswith("gen/pixels/") and k != "gen/pixels/fid" for k in result.metrics)


def test_the_latent_density_follows_the_config(shapes):
    from aesweep.training.train import build

    model, _ = build(tiny("ae", "{features: pixels, latent_density: gmm, gmm_components: 3}"), shapes)
    density = sq.latent_density(model, shapes, tiny("ae", "{features: pixels, latent_density: gmm, "
                                                           "gmm_components: 3}"))
    assert isinstance(density, gen.LatentMixture) and len(density.weights) == 3 and density.dim == 8
    prior = sq.latent_density(model, shapes, tiny("ae", "{features: pixels}"))
    assert isinstance(prior, gen.LatentPrior) and "fitted" in prior.source  # generative.py's rule
    vae, _ = build(tiny("vae", "{features: pixels}"), shapes)
    vae_prior = sq.latent_density(vae, shapes, tiny("vae", "{features: pixels}"))  # the configured N(0, I)
    assert vae_prior.mean.abs().max() == 0 and torch.equal(vae_prior.std, torch.ones(8))

