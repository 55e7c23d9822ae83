"""Sample quality of decoded latent samples: FID and precision / recall / density / coverage (``eval.sample_quality``).

The two sets. Generated: ``eval.gen_samples`` codes drawn from the latent density and decoded (``generative.decode``).
``latent_density: prior`` is generative.py's rule (``prior_for_trial`` / ``resolve_prior``: a gaussian bottleneck's
prior, N(0, I) for mmd, a full-covariance Gaussian fitted to a deterministic AE's train codes); ``gmm`` fits a
Gaussian mixture of ``gmm_components`` (default 10) to the train codes (``generative.fit_mixture``), the ex-post
density of RAE (Ghosh et al. 2020) and pythae. Real: as many images, a seeded subsample of ``generative_split``
(``eval.generative_images``: the test split by default), so that both sets are equally large, as Naeem et al.
measure (the measures' expected values depend on both sizes). Both sets go through one feature extractor
(sample_features.py: ``classifier``, ``inception`` or ``pixels``) on the trial's device.

Keys: ``gen/<extractor>/<measure>``, e.g. ``gen/fashion_mnist_cnn/fid``, ``gen/inception/fid``,
``gen/pixels/precision``: the extractor is in the key, so a FID in our own features is never read as the Inception
FID that papers print. (MLflow rejects '@' in a metric name; '/' is its separator, as in ``probe/<name>/acc``.)

Measures (``SAMPLE_QUALITY``; ``eval.sample_quality.metrics``):

- ``fid`` -> ``fid``: the Fréchet distance ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) between Gaussian fits
  (mean, unbiased covariance) of the real and generated features (Heusel et al. 2017), in squared feature units.
  Tr (S_r S_g)^(1/2) is the sum of the square roots of the eigenvalues of S_r^(1/2) S_g S_r^(1/2), a symmetric PSD
  matrix with the eigenvalues of S_r S_g, by symmetric eigendecompositions in float64 with round-off negatives
  clamped to 0: no complex parts, and no eps added to a singular covariance (fewer samples than features), which
  ``scipy.linalg.sqrtm`` (pytorch-fid) needs. Biased upward by a finite sample: compare FIDs at one gen_samples.
- ``prdc`` -> ``precision``, ``recall``, ``density``, ``coverage`` (Naeem et al. 2020, ``k`` nearest neighbours,
  5): each point's ball has the radius of its distance to its k-th nearest neighbour in its own set. precision:
  the fraction of generated points inside some real ball; recall: of real points inside some generated ball;
  density: (1/k) times the mean over generated points of the number of real balls holding it (1 on average for
  equal distributions; may exceed 1); coverage: the fraction of real balls holding a generated point. Inside means
  strictly closer than the radius; Euclidean distances in float64, as the reference ``prdc`` package computes.
  ``gen/<extractor>/coverage`` is not ``gen/coverage`` (generative.py: a pixel-distance threshold).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from aesweep.data.datasets import Dataset
from aesweep.evaluation import generative as gen
from aesweep.evaluation.sample_features import Extractor, extractor_for
from aesweep.registry import SAMPLE_QUALITY
from aesweep.spec.trial import GMM_COMPONENTS

if TYPE_CHECKING:
    from aesweep.spec.trial import SampleQualityConfig, TrialConfig

__all__ = ["fid", "frechet_distance", "gaussian_fit", "kth_neighbour_distance", "latent_density", "pairwise_distances",
           "prdc", "sample_quality_metrics"]

# Float64 elements per block of a distance matrix (128 MB): a 10k x 10k matrix is never held at once.
CHUNK_ELEMS = 1 << 24


# --------------------------------------------------------------------------------------------------------------
# Distances


def pairwise_distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances (Na, Nb) float64 between the rows of a (Na, F) and b (Nb, F), on a's device.

    ||a||^2 + ||b||^2 - 2 a.b in float64 (a matrix product), clamped at 0: within ~1e-12 relative of the exact
    distances, so comparisons with a radius decide as scikit-learn's float64 ``pairwise_distances`` does.
    """
    a, b = a.double(), b.to(a.device).double()
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2 * a @ b.T
    return d2.clamp_min_(0).sqrt_()


def _rows_per_block(width: int, chunk_elems: int) -> int:
    """Rows of a block of a distance matrix ``width`` wide that hold at most ``chunk_elems`` elements (>= 1)."""
    return max(1, chunk_elems // max(width, 1))


def kth_neighbour_distance(x: Tensor, k: int, chunk_elems: int = CHUNK_ELEMS) -> Tensor:
    """(N,) float64: each row's distance to its k-th nearest other row of x (N, F), N > k.

    The (k+1)-th smallest distance of its row with the row itself (0) included, as the reference ``prdc`` takes
    it (a duplicate row is a neighbour at distance 0). Blocks of rows of at most ``chunk_elems`` distances.
    """
    if not 0 < k < len(x):
        raise ValueError(f"k = {k} nearest neighbours need more than k rows and k >= 1; got {len(x)} rows")
    x = x.flatten(1).double()
    step = _rows_per_block(len(x), chunk_elems)
    return torch.cat([pairwise_distances(x[i:i + step], x).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(x), step)])


# --------------------------------------------------------------------------------------------------------------
# Measures


def prdc(real: Tensor, fake: Tensor, k: int = 5, chunk_elems: int = CHUNK_ELEMS) -> dict[str, float]:
    """precision, recall, density and coverage (Naeem et al. 2020, see the module doc) of features ``fake``
    (M, F) against ``real`` (N, F), N and M > k; on real's device, float64, in blocks of ``chunk_elems``."""
    real, fake = real.flatten(1).double(), fake.to(real.device).flatten(1).double()
    centre = real.mean(0)  # distances are unchanged; smaller norms lose less in ||a||^2 + ||b||^2 - 2 a.b
    real, fake = real - centre, fake - centre
    real_radius = kth_neighbour_distance(real, k, chunk_elems)
    fake_radius = kth_neighbour_distance(fake, k, chunk_elems)
    balls_holding = torch.zeros(len(fake), dtype=torch.long, device=real.device)  # per fake: real balls around it
    recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    step = _rows_per_block(len(fake), chunk_elems)
    for i in range(0, len(real), step):
        d = pairwise_distances(real[i:i + step], fake)
        inside = d < real_radius[i:i + step, None]
        balls_holding += inside.sum(0)
        covered[i:i + step] = inside.any(1)
        recalled[i:i + step] = (d < fake_radius[None, :]).any(1)
    return {
        "precision": (balls_holding > 0).double().mean().item(),
        "recall": recalled.double().mean().item(),
        "density": balls_holding.double().mean().item() / k,
        "coverage": covered.double().mean().item(),
    }


def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F), float64, of features (N, F), N >= 2 (numpy's ``cov``)."""
    x = features.flatten(1).double()
    if len(x) < 2:
        raise ValueError(f"a covariance needs at least 2 rows, got {len(x)}")
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / (len(x) - 1)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)) between N(mu1, sigma1) and N(mu2, sigma2),
    means (F,) and covariances (F, F), in float64 on mu1's device; the trace of the root by eigendecompositions
    (module doc). A distance: round-off below 0 is reported as 0."""
    mu1, sigma1 = mu1.double(), sigma1.double()
    mu2, sigma2 = mu2.to(mu1.device).double(), sigma2.to(mu1.device).double()
    w, v = torch.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = root1 @ sigma2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root
    return max(float(value), 0.0)


def fid(real: Tensor, fake: Tensor) -> float:
    """``frechet_distance`` between the Gaussian fits (``gaussian_fit``) of features real (N, F) and fake (M, F)."""
    return frechet_distance(*gaussian_fit(real), *gaussian_fit(fake.to(real.device)))


@SAMPLE_QUALITY.register("fid", outputs=("fid",))
def _fid(real: Tensor, fake: Tensor, cfg: SampleQualityConfig) -> dict[str, float]:
    """Fréchet distance between Gaussian fits of real and generated features (FID on the named extractor)"""
    return {"fid": fid(real, fake)}


@SAMPLE_QUALITY.register("prdc", outputs=("precision", "recall", "density", "coverage"))
def _prdc(real: Tensor, fake: Tensor, cfg: SampleQualityConfig) -> dict[str, float]:
    """precision, recall, density and coverage of k-nearest-neighbour balls (Naeem et al. 2020)"""
    return prdc(real, fake, cfg.k)


# --------------------------------------------------------------------------------------------------------------
# Entry point


def latent_density(model: nn.Module, dataset: Dataset, cfg: TrialConfig,
                   seed: int = 0) -> gen.LatentPrior | gen.LatentMixture:
    """The density ``cfg.eval.sample_quality.latent_density`` names (module doc), on the model's device."""
    sq = cfg.eval.sample_quality
    if sq is not None and sq.latent_density == "gmm":
        return gen.fit_mixture(gen.train_codes(model, dataset), sq.gmm_components or GMM_COMPONENTS, seed)
    return gen.resolve_prior(model, dataset, gen.prior_for_trial(cfg))


def sample_quality_metrics(model: nn.Module, dataset: Dataset, cfg: TrialConfig, seed: int = 0,
                           extractor: Extractor | None = None) -> dict[str, float]:
    """``gen/<extractor>/<measure>`` for every measure ``cfg.eval.sample_quality.metrics`` names (module doc);
    empty when ``sample_quality`` is None. ``seed`` fixes the latent draws (the same as generative.py's for the
    same seed and prior) and the real subsample; ``extractor`` overrides the configured one (tests)."""
    sq = cfg.eval.sample_quality
    if sq is None:
        return {}
    samples = gen.decode(model, latent_density(model, dataset, cfg, seed).sample(cfg.eval.gen_samples, seed))
    real_split = gen.generative_split(dataset, cfg.eval.generative_images)
    rows = gen.subsample(len(real_split), len(samples), seed).to(real_split.images.device)
    extractor = extractor or extractor_for(cfg, dataset, samples.device)
    real, fake = extractor.features(real_split.images[rows]), extractor.features(samples)
    out: dict[str, float] = {}
    for name in sq.metrics:
        for measure, value in SAMPLE_QUALITY.get(name)(real, fake, sq).items():
            out[f"gen/{extractor.name}/{measure}"] = float(value)
    return out
