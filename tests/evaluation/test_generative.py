"""Generative metrics and latent structure: known answers on planted data, then one run on a tiny model."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from aesweep.data.batches import to_float
from aesweep.data.datasets import Split, load_dataset
from aesweep.evaluation import generative as gen
from aesweep.models.model import AutoEncoder
from aesweep.spec.trial import DatasetConfig, EvalConfig, PriorConfig, TrialConfig


def rand_images(n: int, seed: int, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def brute_force_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, Nb) per-pixel RMSE, the slow exact way."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return ((a[:, None, :] - b[None, :, :]) ** 2).mean(-1).sqrt()


# --------------------------------------------------------------------------------------------------------------
# Sample quality


def test_nearest_neighbours_match_brute_force():
    query, reference = rand_images(37, 0), rand_images(23, 1)
    d = brute_force_rmse(query, reference)
    nn_ = gen.nearest_neighbours(query, reference, chunk_elems=100)  # several chunks
    torch.testing.assert_close(nn_.distance.double(), d.min(1).values, atol=1e-6, rtol=0)
    assert torch.equal(nn_.index, d.argmin(1))
    torch.testing.assert_close(nn_.reverse_distance.double(), d.min(0).values, atol=1e-6, rtol=0)
    own = brute_force_rmse(reference, reference).fill_diagonal_(math.inf)
    self_nn = gen.nearest_neighbours(reference, reference, exclude_self=True, chunk_elems=50)
    torch.testing.assert_close(self_nn.distance.double(), own.min(1).values, atol=1e-6, rtol=0)


def test_samples_equal_to_the_real_set_cover_it_at_distance_zero():
    real = rand_images(50, 0, (1, 28, 28))
    samples = real[torch.randperm(50, generator=torch.Generator().manual_seed(0))]
    assert gen.coverage(samples, real, threshold=1e-6) == 1.0
    assert gen.nn_distance(samples, real) == 0.0  # exact, not the ~1e-4 of a matrix-product distance
    got = gen.sample_metrics(samples, real, threshold=1e-6)
    assert got["gen/coverage"] == 1.0 and got["gen/nn_distance"] == 0.0
    assert got["gen/kl_bits"] == pytest.approx(0.0, abs=1e-12)  # every real image hit exactly once


def test_far_samples_cover_nothing():
    real = 0.1 * rand_images(40, 0)
    samples = 1 - 0.1 * rand_images(30, 1)  # per-pixel RMSE >= 0.8 from every real image
    assert gen.coverage(samples, real, threshold=0.5) == 0.0
    assert gen.nn_distance(samples, real) > 0.8


def test_coverage_counts_real_images_within_the_threshold():
    real = torch.zeros(4, 1, 2, 2)
    real[1] += 0.2
    real[2] += 0.4
    real[3] += 0.9
    samples = torch.full((2, 1, 2, 2), 0.3)  # RMSE 0.3, 0.1, 0.1, 0.6 from the real images
    assert gen.coverage(samples, real, threshold=0.15) == 0.5
    assert gen.coverage(samples, real, threshold=0.35) == 0.75
    assert gen.nn_distance(samples, real) == pytest.approx(0.1, abs=1e-6)


def test_euclidean_coverage_uses_an_absolute_threshold_over_all_pixels():
    # 2x2 images: Euclidean distance = RMSE * sqrt(4) = 2 RMSE (the same nearest neighbours, other units).
    real = torch.zeros(4, 1, 2, 2)
    real[1] += 0.2
    real[2] += 0.4
    real[3] += 0.9
    samples = torch.full((2, 1, 2, 2), 0.3)  # Euclidean 0.6, 0.2, 0.2, 1.2 from the real images
    assert gen.coverage(samples, real, threshold=0.3, distance="euclidean") == 0.5
    assert gen.coverage(samples, real, threshold=0.7, distance="euclidean") == 0.75
    assert gen.coverage(samples, real, threshold=0.3) == 0.75  # rmse: 0.3 is a looser threshold
    assert gen.nn_distance(samples, real, distance="euclidean") == pytest.approx(0.2, abs=1e-6)
    got = gen.sample_metrics(samples, real, threshold=0.3, distance="euclidean")
    assert got["gen/coverage"] == 0.5 and got["gen/threshold"] == 0.3
    assert got["gen/nn_distance"] == pytest.approx(0.2, abs=1e-6)
    # The study's setting on 28x28 images in [0, 1]: one pixel flipped from black to white is Euclidean
    # distance 1, nine flipped pixels are 3: within the threshold; ten are not.
    base = torch.zeros(3, 1, 28, 28)
    near, far = base[:1].clone(), base[:1].clone()
    near.view(-1)[:9] = 1.0
    far.view(-1)[:10] = 1.0
    assert gen.coverage(near, base[:1], threshold=3.0, distance="euclidean") == 1.0
    assert gen.coverage(far, base[:1], threshold=3.0, distance="euclidean") == 0.0
    assert gen.nn_distance(far, base[:1], distance="euclidean") == pytest.approx(math.sqrt(10), abs=1e-5)
    # The default threshold (median real-to-real distance) is in the chosen units too.
    a, b = rand_images(31, 0), rand_images(20, 1)
    assert gen.sample_metrics(b, a, distance="euclidean")["gen/threshold"] == pytest.approx(
        8 * gen.sample_metrics(b, a)["gen/threshold"], rel=1e-6)  # 8x8 images: sqrt(64)
    with pytest.raises(ValueError, match="known: rmse, euclidean"):
        gen.coverage(samples, real, 0.3, distance="l1")
    with pytest.raises(ValueError):
        EvalConfig(coverage_distance="l1")


def test_default_threshold_is_the_median_real_nearest_neighbour_distance():
    real, samples = rand_images(31, 0), rand_images(20, 1)
    expected = brute_force_rmse(real, real).fill_diagonal_(math.inf).min(1).values.median().item()
    assert gen.sample_metrics(samples, real)["gen/threshold"] == pytest.approx(expected, abs=1e-6)


def test_kl_bits_known_answers():
    m = 16
    assert gen.hit_kl_bits(torch.arange(m).repeat(3), m) == pytest.approx(0.0, abs=1e-12)  # uniform hits
    assert gen.hit_kl_bits(torch.full((100,), 5), m) == pytest.approx(math.log2(m))  # all on one image
    assert gen.hit_kl_bits(torch.arange(m // 2).repeat(2), m) == pytest.approx(1.0)  # half the images, evenly
    # Zero counts contribute nothing: the value only depends on the images that were hit.
    assert gen.hit_kl_bits(torch.tensor([0, 0, 1, 1]), 4) == gen.hit_kl_bits(torch.tensor([2, 3, 2, 3]), 4)


# --------------------------------------------------------------------------------------------------------------
# Latent structure


def test_information_rate_matches_the_formula_on_a_known_variance():
    # +-sqrt(3) in equal halves: population variance exactly 3 -> 1/2 log2(1 + 3) = 1 bit per dimension.
    z = torch.tensor([3.0**0.5, -(3.0**0.5)]).repeat(50)[:, None].repeat(1, 4)
    assert gen.information_rate(z, sigma=1.0) == pytest.approx(4.0)
    torch.testing.assert_close(gen.information_rate_per_dim(z, 1.0), torch.ones(4, dtype=torch.float64))
    assert gen.information_rate(2 * z, sigma=2.0) == pytest.approx(4.0)  # var / sigma^2 is what counts
    z[:, 1] = 7.0  # an unused (constant) dimension carries 0 bits
    assert gen.information_rate(z, sigma=1.0) == pytest.approx(3.0)


def test_factor_correlation_finds_a_planted_linear_factor():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g)
    factors = torch.stack([
        torch.randn(500, generator=g),  # unrelated
        -2 * z[:, 4] + 0.05 * torch.randn(500, generator=g) + 3,  # planted on dimension 4, negative sign
        torch.full((500,), 2.0),  # constant: correlation undefined, reported as 0
    ], dim=1)
    fc = gen.factor_correlation(z, factors, ["noise", "planted", "constant"])
    assert fc.abs_corr.shape == (6, 3)
    assert int(fc.best_dim[1]) == 4 and fc.best_corr[1] > 0.99
    assert fc.best_corr[0] < 0.2
    assert torch.equal(fc.abs_corr[:, 2], torch.zeros(6))
    assert fc.as_dict()["planted"][0] == 4
    assert fc.corr[4, 1] < -0.99 and torch.equal(fc.corr.abs(), fc.abs_corr)  # the signed map keeps the sign
    z[:, 4] = 1.0  # a constant latent dimension: 0 too, and the factor is no longer found
    assert not torch.isnan(gen.factor_correlation(z, factors).abs_corr).any()


# --------------------------------------------------------------------------------------------------------------
# Priors


def test_fit_prior_recovers_a_known_gaussian():
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    mean = torch.tensor([1.0, -2.0, 0.5])
    z = mean + torch.randn(20_000, 3, generator=g) @ torch.linalg.cholesky(cov).T
    prior = gen.fit_prior(z)
    torch.testing.assert_close(prior.mean, mean, atol=0.05, rtol=0)
    torch.testing.assert_close(prior.scale_tril @ prior.scale_tril.T, cov, atol=0.06, rtol=0)
    draws = prior.sample(20_000, seed=1)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.08, rtol=0)
    torch.testing.assert_close(gen.fit_prior(z, "diag").std, cov.diagonal().sqrt(), atol=0.03, rtol=0)
    assert torch.equal(prior.sample(5, seed=3), prior.sample(5, seed=3))
    # Fewer codes than dimensions (a rank-deficient covariance) still factorises.
    assert gen.fit_prior(torch.randn(3, 8, generator=g)).sample(4).shape == (4, 8)


@pytest.fixture(scope="module")
def shapes():
    return load_dataset(DatasetConfig(name="shapes", train_size=400, test_size=150, val_fraction=0.1))


def tiny(bottleneck: str = "deterministic") -> AutoEncoder:
    torch.manual_seed(0)
    return AutoEncoder("conv", (1, 28, 28), 4, width=0.125, bottleneck=bottleneck)


def test_resolve_prior_rules(shapes):
    vae, ae = tiny("gaussian"), tiny()
    standard = gen.resolve_prior(vae, shapes)
    assert standard.source == "N(0, I)" and torch.equal(standard.scale_tril, torch.eye(4))
    fitted = gen.resolve_prior(ae, shapes)
    assert "fitted" in fitted.source
    codes = gen.embed_split(ae, shapes.train)
    torch.testing.assert_close(fitted.mean, codes.mean(0), atol=1e-5, rtol=1e-5)
    configured = gen.resolve_prior(vae, shapes, PriorConfig(mean=1.0, std=[1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(configured.std, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(configured.mean, torch.ones(4))
    assert gen.resolve_prior(ae, shapes, "standard").source == "N(0, I)"
    with pytest.raises(ValueError, match="expected a scalar or 4 values"):
        gen.resolve_prior(vae, shapes, {"mean": 0.0, "std": [1.0, 2.0]})
    with pytest.raises(ValueError, match="known: standard"):
        gen.resolve_prior(ae, shapes, "uniform")


def test_prior_for_trial_follows_the_variant():
    def trial(variant: str, **objective) -> TrialConfig:
        return TrialConfig.model_validate({"objective": {"variant": variant, **objective}})

    assert gen.prior_for_trial(trial("ae")) is None
    assert gen.prior_for_trial(trial("mmd")) == "standard"
    assert gen.prior_for_trial(trial("vae")) is None  # the default rule gives N(0, I)
    assert gen.prior_for_trial(trial("vae", prior={"mean": 0.0, "std": 2.0})).std == 2.0


# --------------------------------------------------------------------------------------------------------------
# Entry point


def test_generative_metrics_on_a_tiny_model(shapes):
    model = tiny("gaussian")
    model.train()
    cfg = EvalConfig(generative=["coverage", "information_rate", "factors"], gen_samples=64)
    got = gen.generative_metrics(model, shapes, cfg)
    assert model.training  # mode restored
    expected = {"gen/coverage", "gen/nn_distance", "gen/kl_bits", "gen/threshold", "latent/information_rate",
                *(f"latent/factor_corr/{f}" for f in shapes.factor_names)}
    assert set(got) == expected
    assert all(math.isfinite(v) for v in got.values())
    assert 0 <= got["gen/coverage"] <= 64 / len(shapes.test)  # 64 samples cover at most 64 images
    assert math.log2(len(shapes.test) / 64) - 1e-9 <= got["gen/kl_bits"] <= math.log2(len(shapes.test)) + 1e-9
    assert got["latent/information_rate"] >= 0
    assert all(0 <= got[f"latent/factor_corr/{f}"] <= 1 for f in shapes.factor_names)
    # Same seed, same numbers; a fixed threshold is reported back.
    assert gen.generative_metrics(model, shapes, cfg) == got
    fixed = gen.generative_metrics(model, shapes, cfg.model_copy(update={"coverage_threshold": 0.3}), names=["coverage"])
    assert fixed["gen/threshold"] == 0.3 and set(fixed) == {"gen/coverage", "gen/nn_distance", "gen/kl_bits",
                                                              "gen/threshold"}
    # eval.coverage_distance: euclidean = rmse * sqrt(784) for the same samples (28x28 grey images).
    euclid = gen.generative_metrics(model, shapes, cfg.model_copy(update={"coverage_distance": "euclidean"}),
                                    names=["coverage"])
    assert euclid["gen/nn_distance"] == pytest.approx(28 * got["gen/nn_distance"], rel=1e-5)
    assert euclid["gen/coverage"] == got["gen/coverage"]  # the default threshold scales with the distance


def test_generative_images_all_compares_with_every_split(shapes):
    """eval.generative_images: all is the shapes study's "set of valid images": train + val + test, in order."""
    every = gen.generative_split(shapes, "all")
    parts = (shapes.train, shapes.val, shapes.test)
    assert len(every) == sum(len(p) for p in parts) > len(shapes.test)
    assert torch.equal(every.images[-len(shapes.test):], shapes.test.images)
    assert torch.equal(every.factors[:len(shapes.train)], shapes.train.factors)
    assert gen.generative_split(shapes, "test") is shapes.test
    model = tiny("gaussian")
    cfg = EvalConfig(generative=["coverage", "information_rate", "factors"], gen_samples=64,
                     generative_images="all")
    got = gen.generative_metrics(model, shapes, cfg)
    # The same numbers as the metrics computed by hand against the concatenation, and not the test split's.
    samples = gen.decode(model, gen.resolve_prior(model, shapes, None).sample(64, 0))
    by_hand = gen.sample_metrics(samples, to_float(every.images), None, "rmse")
    assert got["gen/kl_bits"] == pytest.approx(by_hand["gen/kl_bits"])
    assert got["gen/coverage"] == pytest.approx(by_hand["gen/coverage"]) and got["gen/coverage"] <= 64 / len(every)
    assert got["latent/information_rate"] == pytest.approx(gen.information_rate(gen.embed_split(model, every), 1.0))
    on_test = gen.generative_metrics(model, shapes, cfg.model_copy(update={"generative_images": "test"}))
    assert got["gen/kl_bits"] != pytest.approx(on_test["gen/kl_bits"])
    with pytest.raises(ValueError):
        EvalConfig(generative_images="train")


def test_generative_metrics_selection_and_datasets_without_factors(shapes):
    model = tiny()
    assert gen.generative_metrics(model, shapes, EvalConfig()) == {}  # nothing asked for
    no_factors = replace(shapes, test=Split(shapes.test.images, shapes.test.labels), factor_names=())
    got = gen.generative_metrics(model, no_factors, EvalConfig(), names=["information_rate", "factors"])
    assert set(got) == {"latent/information_rate"}
    trial = TrialConfig.model_validate({"objective": {"variant": "mmd"},
                                        "eval": {"generative": ["coverage"], "gen_samples": 16}})
    assert set(gen.generative_metrics(model, shapes, trial)) >= {"gen/coverage"}
    with pytest.raises(ValueError, match="known: coverage"):
        gen.generative_metrics(model, shapes, EvalConfig(), names=["fid"])
