"""Generative quality of prior samples and structure of the latent space (the AE-vs-VAE study on shapes).

Metrics (``generative_metrics`` returns those that ``EvalConfig.generative`` names):

- ``coverage``: decode ``gen_samples`` draws from the latent prior and compare them with the real images: the test
  split, or with ``EvalConfig.generative_images: all`` every image of the dataset (train, validation and test;
  the same choice feeds ``information_rate`` and ``factors``).
  Distance between two images (``EvalConfig.coverage_distance``, images in [0, 1]): ``rmse`` (default), the
  per-pixel RMSE ``sqrt(mean((a - b)^2))`` over C, H, W; or ``euclidean``, ``||a - b||_2 = sqrt(sum((a - b)^2))``
  over the C*H*W pixels (= RMSE * sqrt(C*H*W)), the AE-vs-VAE study's ("I use euclidean as the distance metric
  and the threshold of 3"; its nearest-neighbour distance "is about 2.3 pixels", which only a [0, 1] pixel
  scale gives: on 0..255 a Euclidean distance of 3 would be a near-identical image). Both distances pick the same
  nearest neighbours; ``gen/nn_distance`` and ``gen/threshold`` are in the chosen distance's units.
  ``gen/coverage``: fraction of real images that have at least one sample within ``threshold``.
  ``gen/nn_distance``: mean over samples of the distance to the nearest real image.
  ``gen/kl_bits``: KL(hits || uniform) in bits, where ``hits`` is the distribution of samples over real images
  (each sample counts for its nearest real image) and ``uniform`` puts 1/M on each of the M real images.
  In this direction a real image that no sample hits contributes 0 log 0 = 0, so there is no smoothing and the
  value is finite: 0 when every real image is hit equally often, log2(M) when all samples hit one image. With
  N < M samples the floor is log2(M / N) (at most N images can be hit).
  ``gen/threshold``: the threshold used: ``EvalConfig.coverage_threshold``, else the median over real images of
  the distance to their nearest *other* real image (the data's own spacing: a sample within it is as close to
  a real image as real images are to one another).
  Coverage is bounded by N / M: 1000 samples can cover at most 1000 of the real images.
- ``information_rate``: ``latent/information_rate`` = sum_i 1/2 log2(1 + var(z_i) / sigma^2) bits, the capacity
  of D parallel Gaussian channels whose input is the code z (test-set embeddings: mu for a gaussian
  bottleneck) and whose noise is eps ~ N(0, sigma^2 I), sigma = ``EvalConfig.rate_noise_sigma``. var is the
  population variance over the test images. A dimension the encoder does not use (var 0) adds 0 bits.
- ``factors`` (datasets with generative factors only; skipped otherwise): ``latent/factor_corr/<factor>`` = the
  largest |Pearson correlation| between that factor and any one latent dimension, on the test set (or all
  images, as for coverage). A constant
  dimension or factor has correlation 0 (not NaN). The shapes factor ``shape`` is a category index (0, 1, 2),
  so its correlation only measures a monotone ordering of the three shapes along one dimension.

The latent prior (``resolve_prior``): a gaussian bottleneck samples N(0, I) or the trial's configured prior; a
deterministic AE has no prior, so a Gaussian is fitted to its train latents (mean and full covariance); an mmd AE
was trained to match N(0, I) and samples that (``prior_for_trial``). ``fit_mixture`` fits the other ex-post
density, a Gaussian mixture on the train codes (``LatentMixture``, sampled like a prior; sample_quality.py's
``latent_density: gmm``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from aesweep.data.batches import iterate_batches, to_float
from aesweep.data.datasets import Dataset, Split
from aesweep.spec import variants
from aesweep.spec.trial import TrialConfig

if TYPE_CHECKING:
    from aesweep.spec.trial import EvalConfig, TrialConfig

__all__ = [
    "COVERAGE_DISTANCES", "GENERATIVE_NAMES", "FactorCorrelation", "LatentMixture", "LatentPrior", "NearestNeighbours",
    "coverage", "decode", "embed_split", "factor_correlation", "fit_mixture", "fit_prior", "generative_metrics", "hit_kl_bits", "information_rate",
    "information_rate_per_dim", "nearest_neighbours", "nn_distance", "prior_for_trial", "resolve_prior",
    "sample_metrics", "standard_prior", "subsample", "train_codes",
]

GENERATIVE_NAMES = ("coverage", "information_rate", "factors")
# Image distances for coverage: name -> factor on the per-pixel RMSE, given the pixels per image (C*H*W).
COVERAGE_DISTANCES = {
    "rmse": lambda pixels: 1.0,
    "euclidean": lambda pixels: math.sqrt(pixels),
}
# Train latents used to fit a deterministic AE's Gaussian: a stable D x D covariance for D up to a few hundred
# (the jitter keeps larger ones factorisable), and one encoder pass of at most 5000 images per evaluation.
FIT_ROWS = 5_000


# --------------------------------------------------------------------------------------------------------------
# Running the model


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def subsample(n: int, k: int | None, seed: int = 0) -> Tensor:
    """Sorted indices of ``min(k, n)`` rows drawn without replacement (all rows when k is None), CPU int64.

    Seeded on the CPU so that the same rows are drawn on any device. Splits keep the upstream order (shapes:
    sorted by size and shape), so a prefix would be biased.
    """
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def embed_split(model: nn.Module, split: Split, batch_size: int = 512) -> Tensor:
    """Test-time codes of every image of ``split``: (N, latent_dim) float32 on the model's device.

    ``model.embed`` in eval mode under inference mode: z for a deterministic bottleneck, mu for a gaussian one.
    The model's training mode is restored.
    """
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model.embed(to_float(b.images.to(device))).float()
                     for b in iterate_batches(split, batch_size, shuffle=False)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, model.latent_dim, device=device)


def decode(model: nn.Module, z: Tensor, batch_size: int = 512) -> Tensor:
    """Decode codes z (N, latent_dim) in eval mode: images (N, C, H, W) float32 in [0, 1] on the model's device."""
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model.decode(z[i:i + batch_size].to(device)).float() for i in range(0, len(z), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------------------
# Latent priors


@dataclass(frozen=True)
class LatentPrior:
    """N(mean, L L^T) over the latent space: ``mean`` (D,), ``scale_tril`` L (D, D) lower triangular.

    ``source`` says in words where it came from (figure titles print it).
    """

    mean: Tensor
    scale_tril: Tensor
    source: str

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def std(self) -> Tensor:
        """Marginal standard deviation per dimension, (D,): sqrt of diag(L L^T)."""
        return self.scale_tril.pow(2).sum(1).sqrt()

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n draws (n, D) on the prior's device; the noise is drawn on the CPU so a seed means the same draws
        on every device."""
        eps = torch.randn(n, self.dim, generator=torch.Generator().manual_seed(seed), dtype=self.mean.dtype)
        return self.mean + eps.to(self.mean.device) @ self.scale_tril.T


def standard_prior(dim: int, device: torch.device | str = "cpu") -> LatentPrior:
    """N(0, I) in ``dim`` dimensions."""
    return LatentPrior(torch.zeros(dim, device=device), torch.eye(dim, device=device), "N(0, I)")


def diagonal_prior(mean: Any, std: Any, dim: int, device: torch.device | str = "cpu") -> LatentPrior:
    """N(mean, diag(std^2)); ``mean`` and ``std`` are scalars (broadcast) or sequences of ``dim`` values."""
    m, s = (torch.as_tensor(v, dtype=torch.float32, device=device) for v in (mean, std))
    for name, t in (("mean", m), ("std", s)):
        if t.ndim > 1 or t.numel() not in (1, dim):
            raise ValueError(f"prior {name}: expected a scalar or {dim} values, got shape {tuple(t.shape)}")
    m, s = m.expand(dim).clone(), s.expand(dim)
    return LatentPrior(m, torch.diag(s), "configured prior N(mean, diag std^2)")


def fit_prior(z: Tensor, covariance: str = "full") -> LatentPrior:
    """The Gaussian fitted to codes z (N, D): their mean and their full (or, ``covariance="diag"``, diagonal)
    population covariance. A jitter of 1e-6 times the mean variance keeps a rank-deficient covariance (N <= D,
    dead dimensions) factorisable; it changes no sample by more than ~1e-3 standard deviations."""
    if covariance not in ("full", "diag"):
        raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
    z = z.double()
    mean = z.mean(0)
    centred = z - mean
    cov = centred.T @ centred / max(len(z), 1)
    if covariance == "diag":
        cov = torch.diag(cov.diagonal())
    jitter = 1e-6 * cov.diagonal().mean().clamp_min(1e-12)
    scale = torch.linalg.cholesky(cov + jitter * torch.eye(len(mean), dtype=cov.dtype, device=cov.device))
    return LatentPrior(mean.float(), scale.float(),
                       f"Gaussian fitted to train latents, {covariance} covariance")


def train_codes(model: nn.Module, dataset: Dataset) -> Tensor:
    """The codes an ex-post latent density is fitted to: ``embed_split`` of at most ``FIT_ROWS`` train images
    (a seeded subsample, ``subsample``), (N, latent_dim) float32 on the model's device."""
    rows = subsample(len(dataset.train), FIT_ROWS).to(dataset.train.device)
    return embed_split(model, dataset.train[rows])


@dataclass(frozen=True)
class LatentMixture:
    """A mixture of K Gaussians over the latent space: ``weights`` (K,) summing to 1, ``means`` (K, D),
    ``scale_tril`` (K, D, D) lower-triangular factors of the covariances. Samples like ``LatentPrior``."""

    weights: Tensor
    means: Tensor
    scale_tril: Tensor
    source: str

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n draws (n, D) on the mixture's device: a component per draw by its weight, then that Gaussian. The
        components and the noise are drawn on the CPU, so a seed means the same draws on every device."""
        gen = torch.Generator().manual_seed(seed)
        component = torch.multinomial(self.weights.double().cpu(), n, replacement=True, generator=gen)
        eps = torch.randn(n, self.dim, generator=gen, dtype=self.means.dtype).to(self.means.device)
        component = component.to(self.means.device)
        z = torch.empty_like(eps)
        for k in range(len(self.weights)):  # one product per component: never an (n, D, D) gather
            rows = component == k
            z[rows] = self.means[k] + eps[rows] @ self.scale_tril[k].T
        return z


def fit_mixture(z: Tensor, components: int, seed: int = 0) -> LatentMixture:
    """A full-covariance Gaussian mixture of ``components`` components fitted by EM to codes z (N, D): the
    ex-post density that RAE (Ghosh et al. 2020) and pythae's GaussianMixtureSampler sample a deterministic
    autoencoder from (both: scikit-learn's GaussianMixture, full covariance, 10 components).

    Fitted by scikit-learn on the CPU in float64 (at most ``FIT_ROWS`` codes, seconds), seeded by ``seed``; its
    ``reg_covar`` (1e-6 on the diagonal) keeps every covariance factorisable. On z's device. Raises ValueError
    when there are fewer codes than components.
    """
    # Imported here: scikit-learn costs a worker seconds to import, and only this density needs it here.
    from sklearn.mixture import GaussianMixture

    if len(z) < components:
        raise ValueError(f"a {components}-component latent density needs at least {components} codes, got {len(z)}")
    gmm = GaussianMixture(components, covariance_type="full", random_state=seed).fit(z.double().cpu().numpy())
    cov = torch.as_tensor(gmm.covariances_, dtype=torch.float64)
    return LatentMixture(torch.as_tensor(gmm.weights_, dtype=torch.float64).float().to(z.device),
                         torch.as_tensor(gmm.means_).float().to(z.device),
                         torch.linalg.cholesky(cov).float().to(z.device),
                         f"{components}-component Gaussian mixture fitted to train latents")


def prior_for_trial(cfg: TrialConfig) -> Any:
    """The ``prior`` argument that fits a trial's variant: its configured prior for a gaussian bottleneck, N(0, I)
    for an mmd AE (its regulariser's target), None (the default rule of ``resolve_prior``) otherwise."""

    presets = variants.parts(cfg.objective.variant)
    if any(p.bottleneck == "gaussian" for p in presets) and cfg.objective.prior is not None:
        return cfg.objective.prior
    if any(p.name == "mmd" for p in presets):
        return "standard"
    return None


def resolve_prior(model: nn.Module, dataset: Dataset | None = None, prior: Any = None) -> LatentPrior:
    """The latent distribution to sample, on the model's device.

    prior: None = N(0, I) for a gaussian bottleneck, else the Gaussian fitted to the train latents (full
    covariance); "standard" = N(0, I); "fit" / "fit_diag" = fitted (full / diagonal covariance); an object or
    mapping with ``mean`` and ``std`` (spec.PriorConfig) = that diagonal Gaussian; a LatentPrior = itself.
    A fitted prior needs ``dataset`` (its train split, at most ``FIT_ROWS`` rows, seeded).
    """
    device, dim = _device(model), model.latent_dim
    if isinstance(prior, LatentPrior):
        return prior
    if prior is None:
        prior = "standard" if getattr(model, "gaussian", False) else "fit"
    if isinstance(prior, str):
        if prior == "standard":
            return standard_prior(dim, device)
        if prior in ("fit", "fit_diag"):
            if dataset is None:
                raise ValueError("fitting a prior to the train latents needs the dataset")
            return fit_prior(train_codes(model, dataset), "diag" if prior == "fit_diag" else "full")
        raise ValueError(f"unknown prior {prior!r}; known: standard, fit, fit_diag, or a mean/std prior")
    if isinstance(prior, Mapping):
        return diagonal_prior(prior.get("mean", 0.0), prior.get("std", 1.0), dim, device)
    return diagonal_prior(prior.mean, prior.std, dim, device)


# --------------------------------------------------------------------------------------------------------------
# Sample quality: pure functions on flattened images


@dataclass
class NearestNeighbours:
    """Nearest neighbours between a query set (Nq rows) and a reference set (Nr rows), per-pixel RMSE.

    ``distance`` (Nq,) and ``index`` (Nq,): each query's nearest reference row; ``reverse_distance`` (Nr,): each
    reference row's distance to its nearest query row.
    """

    distance: Tensor
    index: Tensor
    reverse_distance: Tensor


def _rmse_rows(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel RMSE between paired rows, (N,)."""
    return (a.double() - b.double()).pow(2).mean(1).sqrt().float()


def nearest_neighbours(query: Tensor, reference: Tensor, exclude_self: bool = False,
                       chunk_elems: int = 1 << 24) -> NearestNeighbours:
    """Nearest neighbours in per-pixel RMSE between images ``query`` (Nq, ...) and ``reference`` (Nr, ...).

    One pass over chunks of ``query``: the squared distances come from one matrix product per chunk
    (||a||^2 + ||b||^2 - 2 a.b, float32), which finds the nearest rows; the distances reported are then
    recomputed exactly for those pairs, so identical images are at distance 0, not ~1e-4. ``exclude_self`` (query
    is reference) skips each row's match with itself. Memory: about ``chunk_elems`` floats per chunk.
    """
    q, r = query.flatten(1).float(), reference.to(query.device).flatten(1).float()
    if exclude_self and len(q) != len(r):
        raise ValueError("exclude_self needs query and reference to be the same set")
    if exclude_self and len(q) < 2:
        raise ValueError("exclude_self needs at least two images")
    centre = r.mean(0)  # centring shrinks the norms and so the float32 cancellation error
    q, r = q - centre, r - centre
    r_sq = r.pow(2).sum(1)
    rows = max(1, chunk_elems // max(len(r), 1))
    index = torch.empty(len(q), dtype=torch.long, device=q.device)
    rev_d2 = torch.full((len(r),), math.inf, device=q.device)
    rev_index = torch.zeros(len(r), dtype=torch.long, device=q.device)
    for start in range(0, len(q), rows):
        block = q[start:start + rows]
        d2 = block.pow(2).sum(1, keepdim=True) + r_sq[None, :] - 2 * block @ r.T
        if exclude_self:
            own = torch.arange(start, start + len(block), device=q.device)
            d2[torch.arange(len(block), device=q.device), own] = math.inf
        index[start:start + len(block)] = d2.argmin(1)
        best, arg = d2.min(0)
        better = best < rev_d2
        rev_d2 = torch.where(better, best, rev_d2)
        rev_index = torch.where(better, arg + start, rev_index)
    return NearestNeighbours(_rmse_rows(q, r[index]), index, _rmse_rows(r, q[rev_index]))


def _distance_scale(distance: str, images: Tensor) -> float:
    """The factor that turns per-pixel RMSE into ``distance`` for images like ``images`` (N, ...)."""
    if distance not in COVERAGE_DISTANCES:
        raise ValueError(f"unknown coverage distance {distance!r}; known: {', '.join(COVERAGE_DISTANCES)}")
    return COVERAGE_DISTANCES[distance](images[0].numel() if len(images) else 1)


def coverage(samples: Tensor, real: Tensor, threshold: float, distance: str = "rmse") -> float:
    """Fraction of ``real`` images (M, ...) with at least one of ``samples`` (N, ...) within ``threshold``
    (in ``distance``: per-pixel RMSE or Euclidean, images in [0, 1])."""
    reverse = nearest_neighbours(samples, real).reverse_distance * _distance_scale(distance, real)
    return (reverse <= threshold).float().mean().item()


def nn_distance(samples: Tensor, real: Tensor, distance: str = "rmse") -> float:
    """Mean over ``samples`` of the distance (``rmse`` or ``euclidean``) to the nearest ``real`` image."""
    return nearest_neighbours(samples, real).distance.mean().item() * _distance_scale(distance, real)


def hit_kl_bits(hits: Tensor, n_real: int) -> float:
    """KL(hits || uniform) in bits: ``hits`` (N,) int, the real image (0..n_real-1) each sample is nearest to.

    = sum_j p_j log2(p_j n_real), p_j = count_j / N; images with count 0 contribute 0 (no smoothing needed in
    this direction). 0 for equal counts, log2(n_real) when every sample hits one image.
    """
    counts = torch.bincount(hits.flatten().long(), minlength=n_real).double()
    p = counts[counts > 0] / counts.sum()
    return float((p * torch.log2(p * n_real)).sum())


def sample_metrics(samples: Tensor, real: Tensor, threshold: float | None = None,
                   distance: str = "rmse") -> dict[str, float]:
    """gen/coverage, gen/nn_distance, gen/kl_bits and gen/threshold for decoded ``samples`` (N, C, H, W) against
    ``real`` images (M, C, H, W), both float in [0, 1]. ``distance``: ``rmse`` (per pixel) or ``euclidean`` (over
    all pixels); ``threshold`` and the distances reported are in its units. ``threshold`` None: the median
    distance of each real image to its nearest other real image."""
    scale = _distance_scale(distance, real)
    if threshold is None:
        threshold = nearest_neighbours(real, real, exclude_self=True).distance.median().item() * scale
    nn_ = nearest_neighbours(samples, real)
    return {
        "gen/coverage": (nn_.reverse_distance * scale <= threshold).float().mean().item(),
        "gen/nn_distance": nn_.distance.mean().item() * scale,
        "gen/kl_bits": hit_kl_bits(nn_.index, len(real)),
        "gen/threshold": float(threshold),
    }


# --------------------------------------------------------------------------------------------------------------
# Latent structure


def information_rate_per_dim(z: Tensor, sigma: float = 1.0) -> Tensor:
    """1/2 log2(1 + var(z_i) / sigma^2) bits per dimension, (D,); var = population variance over the N rows
    of z (N, D)."""
    var = z.double().var(0, correction=0)
    return 0.5 * torch.log2(1 + var / sigma**2)


def information_rate(z: Tensor, sigma: float = 1.0) -> float:
    """Total rate in bits: sum over dimensions of ``information_rate_per_dim``."""
    return float(information_rate_per_dim(z, sigma).sum())


@dataclass
class FactorCorrelation:
    """|Pearson correlation| between latent dimensions and generative factors.

    ``abs_corr`` (D, F); ``best_dim`` (F,) the most correlated dimension per factor; ``best_corr`` (F,) its
    |correlation|; ``names`` the F factor names; ``corr`` (D, F) the signed correlations (0 where undefined).
    """

    abs_corr: Tensor
    best_dim: Tensor
    best_corr: Tensor
    names: tuple[str, ...]
    corr: Tensor | None = None

    def as_dict(self) -> dict[str, tuple[int, float]]:
        """factor -> (best dimension, |correlation|)."""
        return {n: (int(d), float(c)) for n, d, c in zip(self.names, self.best_dim, self.best_corr, strict=True)}


def factor_correlation(z: Tensor, factors: Tensor, names: Sequence[str] | None = None) -> FactorCorrelation:
    """|corr| between each column of z (N, D) and each column of factors (N, F); constant columns give 0."""
    z, f = z.double(), factors.to(z.device).double()
    zc, fc = z - z.mean(0), f - f.mean(0)
    zn, fn = zc.norm(dim=0), fc.norm(dim=0)
    # Norms below this are constants up to rounding: their correlation is undefined, reported as 0.
    tiny = 1e-12
    denom = zn[:, None] * fn[None, :]
    corr = (zc.T @ fc) / denom.where(denom > tiny**2, torch.ones_like(denom))
    signed = corr.where((zn[:, None] > tiny) & (fn[None, :] > tiny), torch.zeros_like(corr)).clamp(-1, 1)
    corr = signed.abs()
    best_corr, best_dim = corr.max(0)
    names = tuple(names) if names is not None else tuple(f"factor{i}" for i in range(f.shape[1]))
    return FactorCorrelation(corr.float().cpu(), best_dim.cpu(), best_corr.float().cpu(), names,
                             signed.float().cpu())


def latent_factor_correlation(model: nn.Module, dataset: Dataset) -> FactorCorrelation | None:
    """``factor_correlation`` of the test embeddings with the test factors; None for a dataset without factors."""
    if dataset.test.factors is None or not dataset.factor_names:
        return None
    return factor_correlation(embed_split(model, dataset.test), dataset.test.factors, dataset.factor_names)


# --------------------------------------------------------------------------------------------------------------
# Entry point


def generative_split(dataset: Dataset, which: str = "test") -> Split:
    """The real images the generative metrics use: ``test``, the test split; ``all``, train + validation + test
    concatenated in that order (factors kept only when every split has them)."""
    if which == "test":
        return dataset.test
    if which != "all":
        raise ValueError(f"generative images must be 'test' or 'all', got {which!r}")
    parts = (dataset.train, dataset.val, dataset.test)
    factors = torch.cat([p.factors for p in parts]) if all(p.factors is not None for p in parts) else None
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), factors)


def generative_metrics(model: nn.Module, dataset: Dataset, cfg: EvalConfig | TrialConfig, prior: Any = None,
                       names: Iterable[str] | None = None, seed: int = 0) -> dict[str, float]:
    """The generative and latent metrics that ``names`` (default: ``cfg.generative``) ask for, as floats.

    cfg: an EvalConfig, or a TrialConfig (its ``eval`` section; and, when ``prior`` is None, the prior its
    variant implies, see ``prior_for_trial``). prior: as ``resolve_prior``. Real images and embeddings come from
    ``generative_split`` (``eval.generative_images``); ``seed`` fixes the prior draws. "factors" is skipped for a
    dataset without factors.
    """

    eval_cfg = cfg.eval if isinstance(cfg, TrialConfig) else cfg
    if prior is None and isinstance(cfg, TrialConfig):
        prior = prior_for_trial(cfg)
    names = list(eval_cfg.generative if names is None else names)
    if unknown := set(names) - set(GENERATIVE_NAMES):
        raise ValueError(f"unknown generative metric(s) {sorted(unknown)}; known: {', '.join(GENERATIVE_NAMES)}")
    out: dict[str, float] = {}
    images = generative_split(dataset, eval_cfg.generative_images)
    if "coverage" in names:
        samples = decode(model, resolve_prior(model, dataset, prior).sample(eval_cfg.gen_samples, seed))
        real = to_float(images.images.to(samples.device))
        out.update(sample_metrics(samples, real, eval_cfg.coverage_threshold, eval_cfg.coverage_distance))
    z = None
    if "information_rate" in names:
        z = embed_split(model, images)
        out["latent/information_rate"] = information_rate(z, eval_cfg.rate_noise_sigma)
    if "factors" in names and images.factors is not None and dataset.factor_names:
        z = embed_split(model, images) if z is None else z
        fc = factor_correlation(z, images.factors, dataset.factor_names)
        out.update({f"latent/factor_corr/{n}": float(c) for n, c in zip(fc.names, fc.best_corr, strict=True)})
    return out
