"""Clusterers on embeddings (``CLUSTERERS``: kmeans, gmm, hdbscan) and their ARI / NMI scores against the
classes. HDBSCAN's noise points (label -1) count as one more cluster of their own in ARI and NMI, as in the
published protocol; ``n_clusters`` leaves them out and ``noise_frac`` is their share.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from aesweep.evaluation.solvers import (
    KMEANS_N_INIT,
    float64_array,
    labels_array,
    sklearn_threads,
    torch_kmeans,
)
from aesweep.registry import CLUSTERERS

if TYPE_CHECKING:
    from aesweep.spec.trial import EvalConfig




def cluster_scores(y_true: np.ndarray, labels: np.ndarray, method: str) -> dict[str, float]:
    """``cluster/<method>/ari|nmi|n_clusters`` of cluster ``labels (M,)`` against classes ``y_true (M,)``.

    Label -1 (HDBSCAN noise) is kept as one more cluster for ARI/NMI, as the published protocol does: a method
    that calls most points noise is scored as having put them into one big cluster. ``n_clusters`` does not count
    it; ``run_probes`` reports the share of -1 as ``cluster/<method>/noise_frac``."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y_true, labels = labels_array(y_true), labels_array(labels)
    out = {
        f"cluster/{method}/ari": float(adjusted_rand_score(y_true, labels)),
        f"cluster/{method}/nmi": float(normalized_mutual_info_score(y_true, labels)),
        f"cluster/{method}/n_clusters": float(len(np.unique(labels[labels >= 0]))),
    }
    return out



# --------------------------------------------------------------------------------------------------------------
# Clusterers: one row each. Each clusters the rows it is given; the caller picks the rows (all test rows, or a
# subsample bounded by cluster_subsample when ``bounded``).


@dataclass(frozen=True)
class Clusterer:
    """A clustering method. ``fit_predict(x (M, D) tensor, k, cfg, seed) -> labels (M,) numpy`` (-1 = noise);
    ``bounded``: it clusters at most ``cfg.cluster_subsample`` rows (super-linear or host-only methods)."""

    fit_predict: Callable[[Tensor, int, EvalConfig, int], np.ndarray]
    bounded: bool = True


def _kmeans(x: Tensor, k: int, cfg: EvalConfig, seed: int) -> np.ndarray:
    if cfg.backend == "sklearn" or cfg.protocol == "paper":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed).fit_predict(float64_array(x))
    return torch_kmeans(x, k, n_init=KMEANS_N_INIT, seed=seed)[0].cpu().numpy()


def _gmm(x: Tensor, k: int, cfg: EvalConfig, seed: int) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    # Diagonal covariances by default: full ones cost ~9 s per EM iteration at 50k x 256 and need D^2/2 parameters
    # per component; the published protocol used full ones, so paper does.
    covariance = "full" if cfg.protocol == "paper" else "diag"
    with sklearn_threads():
        return GaussianMixture(n_components=k, covariance_type=covariance, random_state=seed).fit_predict(float64_array(x))


def _hdbscan(x: Tensor, k: int, cfg: EvalConfig, seed: int) -> np.ndarray:
    """HDBSCAN (the ``hdbscan`` package) on a PCA reduction to ``cluster_pca_dim``; k is unused (HDBSCAN picks
    the number of clusters). The PCA keeps the tree-based neighbour search fast: ~0.5 s at 5000 x 32.

    Noise points keep label -1; ARI and NMI then treat the noise as one more cluster of its own (as the published
    protocol did), ``n_clusters`` excludes it and ``noise_frac`` reports its share."""
    import hdbscan
    from sklearn.decomposition import PCA

    z = float64_array(x)
    if cfg.cluster_pca_dim is not None and cfg.cluster_pca_dim < min(z.shape):
        with sklearn_threads():
            z = PCA(n_components=cfg.cluster_pca_dim, random_state=seed).fit_transform(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # hdbscan passes a renamed scikit-learn argument
        return hdbscan.HDBSCAN(min_cluster_size=cfg.hdbscan_min_cluster_size, core_dist_n_jobs=-1).fit_predict(z)


CLUSTERERS.add("kmeans", Clusterer(_kmeans, bounded=False),
               "k-means, k = number of classes (torch Lloyd + k-means++ on the device; all test rows)")
CLUSTERERS.add("gmm", Clusterer(_gmm), "Gaussian mixture, diagonal covariances, k = number of classes")
CLUSTERERS.add("hdbscan", Clusterer(_hdbscan),
               "HDBSCAN on a PCA reduction; noise (-1) is scored as one more cluster, noise_frac reported")



