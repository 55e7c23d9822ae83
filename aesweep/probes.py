"""Latent probes: classifiers and clusterers on embeddings, label-efficiency curves, and a cheap online probe.

Embeddings are computed once per evaluation; every probe here reuses them. Inputs are ``train_x (N, D)``,
``train_y (N,)``, ``test_x (M, D)``, ``test_y (M,)``, as torch tensors on any device or as numpy arrays; labels are
integers in ``0..num_classes-1``. One entry point, ``run_probes``, returns a flat ``{metric name: float}`` dict whose
names are the MLflow contract:

    probe/<name>/acc, probe/<name>/f1 (macro), probe/<name>/acc/class_<k>, probe/<name>/acc_at_<n>, acc_at_all,
    probe/<name>/cv_mean, probe/<name>/cv_std (paper protocol), time/probe/<name>_s,
    time/probe/<name>/label_efficiency_s,
    cluster/<method>/ari, cluster/<method>/nmi, cluster/<method>/n_clusters, cluster/hdbscan/noise_frac,
    time/cluster/<method>_s

HDBSCAN's noise points (label -1) count as one more cluster of their own in ARI and NMI, as in the published
protocol; ``n_clusters`` leaves them out and ``noise_frac`` is their share.

Two protocols (``EvalConfig.protocol``):

- ``fast`` (default): fixed hyperparameters, one preprocessing (``EvalConfig.preprocessing``), one fit per probe.
  Logistic regression, kNN and k-means run in plain torch on the embeddings' device (``backend: auto`` or
  ``torch``; probes without a torch path use scikit-learn either way). They solve the same problems as their
  scikit-learn counterparts (tests check the agreement on real Fashion-MNIST features); ``backend: sklearn`` runs
  scikit-learn for everything.
- ``paper``: the published protocol of ``shared/baselines/naive_probes.py``: for every classifier and every
  preprocessing, GridSearchCV(cv=3) over a small grid, a 5-fold CV score of the best pipeline, its test accuracy;
  the best test accuracy over preprocessings is reported (the selection on the test set is the published one,
  kept for comparability). The GMM uses full covariances there, as published. It is scikit-learn throughout.
  The row bounds (``subsample``, ``slow_subsample``, ``cluster_subsample``, ``cluster_pca_dim``) still apply: set
  them to null for the published protocol exactly.

Registries: ``PROBES`` holds ``Probe`` rows (logreg, mlp, random_forest, knn, mlp_torch), ``CLUSTERERS`` holds
``Clusterer`` rows (kmeans, gmm, hdbscan). Adding one is one row here plus its test. ``mlp_torch`` (the paradigms
studies' classifier on a frozen encoder: a torch MLP with dropout, Adam, early stopping) lives in ``mlp_probe``;
its knobs are ``EvalConfig.mlp_torch``, handed to it through the row's ``options``.

This module imports neither Ray nor MLflow, and imports scikit-learn and hdbscan lazily: ``registry.load_all``
imports it to validate specs, which should not pay scikit-learn's ~2 s import.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from aesweep.registry import CLUSTERERS, PROBES

if TYPE_CHECKING:
    from aesweep.spec import EvalConfig

__all__ = [
    "Probe", "Clusterer", "PREPROCESSINGS", "run_probes", "online_probe", "fit_predict", "paper_probe",
    "classification_scores", "cluster_scores", "stratified_subset", "per_class_subset", "standardize",
    "torch_logreg", "torch_logreg_fit", "torch_knn", "torch_kmeans", "KMEANS_N_INIT",
]

ArrayLike = Any  # torch.Tensor or np.ndarray

# Fixed hyperparameters of the fast protocol, with their reasons.
# Inverse L2 strength in scikit-learn's units (C=1 is its default). Latent sizes in a sweep span 16..2048 and the
# best C falls as D/N grows; 0.1 is the fixed value that is never far off. Accuracy of C=0.1 minus C=1 on
# standardised Fashion-MNIST projections (points): D=16-64: -0.4..+0.8; D=256: +2.5 at N=2000, +0.6 at 10000,
# -0.0 at 50000; D=1024: +1.8 at 2000, +1.0 at 10000. The published protocol picks C from {0.1, 1, 10} per run.
LOGREG_C = 0.1
# L-BFGS budget and gradient tolerance: scikit-learn's lbfgs defaults, used by the torch path and the sklearn
# reference alike. On standardised Fashion-MNIST projections 100 iterations land within 0.2 points of a run to
# convergence (500+ iterations at 50k x 256) at a fifth of the cost.
LOGREG_MAX_ITER = 100
LOGREG_TOL = 1e-4
KNN_K = 5  # the published k; distance-weighted votes
# k-means++ restarts, as published. Fashion-MNIST features have several local minima of near-equal inertia whose
# ARI differs by 0.01-0.05; over seeds the ARI spread at 10000 x 256 is 0.006 with 3 restarts, 0.0005 with 10, for
# 1.5 s on two CPU cores (a fraction of that on a GPU).
KMEANS_N_INIT = 10
KMEANS_MAX_ITER = 300  # scikit-learn's default
# Intra-op threads for the iterative CPU solvers (L-BFGS, Lloyd). Their steps are millisecond-sized ops where
# OpenMP fork/join and spin-waits dominate; with another process on the cores, two threads made logistic regression
# 5-10x slower than one (5000 x 32: 0.25 s vs 4.4 s; 10000 x 256: 1.1 s vs 9.8 s) and never faster at 50k x 256.
# kNN's large cdist blocks keep torch's default thread count.
SOLVER_THREADS = 1
# kNN distance blocks hold at most this many floats (256 MiB in float32) so 50k x 50k never materialises at once.
KNN_BLOCK_FLOATS = 1 << 26


# --------------------------------------------------------------------------------------------------------------
# Conversions and row selection


def _tensor(x: ArrayLike, device: torch.device | None = None) -> Tensor:
    """float32 tensor (a view where possible) on ``device`` (default: where ``x`` already is)."""
    t = torch.as_tensor(x)
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def _labels(y: ArrayLike) -> np.ndarray:
    """int64 numpy labels (N,) on the host: scikit-learn and the metrics want them there."""
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    return np.asarray(y).astype(np.int64).reshape(-1)


def _numpy(x: ArrayLike) -> np.ndarray:
    """float64 host array: scikit-learn's reference paths work in float64."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def stratified_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of at most ``n`` rows of ``y (N,)``, every class keeping its share (largest remainder),
    drawn by a seeded permutation. ``n`` None or >= N: all rows."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n / len(y))
    quota = np.floor(exact).astype(int)
    # Hand the rows that flooring lost to the classes with the largest remainders.
    quota[np.argsort(quota - exact, kind="stable")[: n - quota.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked))


def per_class_subset(y: np.ndarray, n_per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices of ``min(n_per_class, count)`` rows of every class of ``y (N,)``.

    One seeded permutation per class, so under one seed the subset for n is a prefix of the subset for any larger
    n: a label-efficiency curve adds labels rather than drawing a new sample at every point."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


@contextlib.contextmanager
def _sklearn_threads() -> Iterator[None]:
    """Single-threaded BLAS around scikit-learn fits, and no ConvergenceWarning spam from fixed-budget fits.

    The MLP (Adam on 200-row minibatches) and the GMM (EM) issue thousands of small BLAS calls; OpenBLAS's thread
    wake-ups cost more than those calls (measured on a 2-core machine shared with other jobs, at 5000 x 256: MLP
    25 s -> 2.2 s, diag GMM 6.9 s -> 1.0 s), and under Ray several trials share the cores anyway. scikit-learn's KMeans makes the same
    choice internally. Forests parallelise over trees (joblib), which this does not touch."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@contextlib.contextmanager
def _solver_threads(device: torch.device) -> Iterator[None]:
    """Run the block with ``SOLVER_THREADS`` torch intra-op threads on the CPU (restored after); no-op elsewhere."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, SOLVER_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------------
# Scores


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, prefix: str) -> dict[str, float]:
    """``{prefix}/acc``, ``{prefix}/f1`` (macro over the classes present in ``y_true``) and
    ``{prefix}/acc/class_<k>`` (recall of class k, for each k present in ``y_true``); ``y_* (M,)`` ints."""
    from sklearn.metrics import f1_score

    y_true, y_pred = _labels(y_true), _labels(y_pred)
    present = np.unique(y_true)
    out = {
        f"{prefix}/acc": float(np.mean(y_true == y_pred)),
        f"{prefix}/f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
    }
    for k in range(num_classes):
        mask = y_true == k
        if mask.any():
            out[f"{prefix}/acc/class_{k}"] = float(np.mean(y_pred[mask] == k))
    return out


def cluster_scores(y_true: np.ndarray, labels: np.ndarray, method: str) -> dict[str, float]:
    """``cluster/<method>/ari|nmi|n_clusters`` of cluster ``labels (M,)`` against classes ``y_true (M,)``.

    Label -1 (HDBSCAN noise) is kept as one more cluster for ARI/NMI, as the published protocol does: a method
    that calls most points noise is scored as having put them into one big cluster. ``n_clusters`` does not count
    it; ``run_probes`` reports the share of -1 as ``cluster/<method>/noise_frac``."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y_true, labels = _labels(y_true), _labels(labels)
    out = {
        f"cluster/{method}/ari": float(adjusted_rand_score(y_true, labels)),
        f"cluster/{method}/nmi": float(normalized_mutual_info_score(y_true, labels)),
        f"cluster/{method}/n_clusters": float(len(np.unique(labels[labels >= 0]))),
    }
    return out


# --------------------------------------------------------------------------------------------------------------
# Torch fast paths. They run on whatever device the embeddings live on and return predictions on that device.


def standardize(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    """StandardScaler in torch: mean and population std of ``train_x (N, D)`` applied to both; a constant column
    gets scale 1, as in scikit-learn. Returns float32 ``(N, D)``, ``(M, D)``."""
    mean = train_x.mean(0)
    std = train_x.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train_x - mean) / std, (test_x - mean) / std


def torch_logreg_fit(train_x: Tensor, train_y: Tensor, num_classes: int, *, C: float = LOGREG_C,
                     max_iter: int = LOGREG_MAX_ITER, tol: float = LOGREG_TOL) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression with scikit-learn's objective, by full-batch L-BFGS on ``train_x (N, D)``,
    ``train_y (N,)``; returns (W (D, K), b (K,)) on train_x's device, logits = x @ W + b.

    Objective: mean cross-entropy + ||W||^2 / (2 C N), the intercept unpenalised: scikit-learn's
    ``sum CE + ||W||^2 / (2C)`` divided by N (as scikit-learn itself scales it), so C means what it means there.
    Full K-column parameterisation, zero init, strong-Wolfe line search, history 10 (scipy's default); stops after
    ``max_iter`` iterations or once the largest gradient entry is below ``tol`` (scikit-learn's defaults).
    The gradient is written out, X^T (softmax - onehot) / N + W / (C N), rather than taken by autograd: no graph
    per evaluation, and inputs made under ``torch.inference_mode()`` need no special care."""
    n, d = train_x.shape
    # Parameters updated in place must be ordinary tensors even when the caller is under inference_mode.
    with torch.inference_mode(False), torch.no_grad(), _solver_threads(train_x.device):
        x = train_x.float()
        onehot = torch.nn.functional.one_hot(train_y.long(), num_classes).to(x.dtype)
        w = torch.zeros(d, num_classes, device=x.device)
        b = torch.zeros(num_classes, device=x.device)
        w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
                                tolerance_grad=tol, tolerance_change=1e-9)
        l2 = 1.0 / (C * n)

        def closure() -> Tensor:
            logits = torch.addmm(b, x, w)
            lse = logits.logsumexp(1, keepdim=True)
            loss = (lse - logits).mul_(onehot).sum() / n + 0.5 * l2 * (w * w).sum()
            residual = logits.sub_(lse).exp_().sub_(onehot).div_(n)  # (softmax - onehot) / N, in logits' memory
            torch.mm(x.T, residual, out=w.grad)
            w.grad.add_(w, alpha=l2)
            torch.sum(residual, 0, out=b.grad)
            return loss

        opt.step(closure)
    w.grad = b.grad = None
    return w, b


def torch_logreg(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, **kw: Any) -> Tensor:
    """``torch_logreg_fit`` on the training rows, predicted labels (M,) for ``test_x (M, D)``."""
    w, b = torch_logreg_fit(train_x, train_y, num_classes, **kw)
    return torch.addmm(b, test_x.float(), w).argmax(1)


def torch_knn(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, *, k: int = KNN_K) -> Tensor:
    """Distance-weighted k-nearest-neighbour vote (weights 1/d, Euclidean); predicted labels (M,).

    As scikit-learn's ``weights="distance"``: a test point at distance 0 from training points takes the vote of
    those points only; equal votes go to the smaller class. Rows of ``test_x`` are processed in blocks so memory
    stays bounded by ``KNN_BLOCK_FLOATS`` whatever N and M are. In each block torch.cdist (a matmul) shortlists
    2k + 8 candidates, whose distances are then recomputed exactly: the matmul form loses the small distances to
    float32 cancellation (a duplicate comes out at ~1e-4 instead of 0), and ties go to the lower training index,
    as in scikit-learn's brute-force search."""
    n = len(train_x)
    k = min(k, n)
    pool = min(n, 2 * k + 8)
    train_x, test_x, train_y = train_x.float(), test_x.float(), train_y.long()
    block = max(1, KNN_BLOCK_FLOATS // max(n, pool * train_x.shape[1]))
    out = torch.empty(len(test_x), dtype=torch.long, device=test_x.device)
    for start in range(0, len(test_x), block):
        rows = test_x[start:start + block]
        cand = torch.cdist(rows, train_x).topk(pool, dim=1, largest=False).indices.sort(1).values
        exact = (rows[:, None, :] - train_x[cand]).norm(dim=2)  # (B, pool), candidates in index order
        dist, order = exact.sort(dim=1, stable=True)
        dist, idx = dist[:, :k], cand.gather(1, order[:, :k])
        zero = dist == 0
        weight = torch.where(zero.any(1, keepdim=True), zero.float(), 1.0 / dist.clamp_min(1e-30))
        votes = torch.zeros(len(rows), num_classes, device=rows.device).scatter_add_(1, train_y[idx], weight)
        out[start:start + block] = votes.argmax(1)
    return out


def _sq_dist(x: Tensor, x_sq: Tensor, c: Tensor) -> Tensor:
    """Squared Euclidean distances (N, K) from rows of ``x (N, D)`` (``x_sq (N,)`` their squared norms) to ``c``."""
    return (x_sq[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]).clamp_min_(0)


def _kmeans_pp(x: Tensor, x_sq: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ (scikit-learn's): each new centre is the best of 2 + log(k) D^2-sampled candidates."""
    n = len(x)
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), device=x.device, generator=generator)
    centers = [x[first]]
    closest = _sq_dist(x, x_sq, centers[0])[:, 0]
    for _ in range(1, k):
        cum = closest.double().cumsum(0)
        u = torch.rand(trials, device=x.device, generator=generator, dtype=torch.float64) * cum[-1]
        cand = torch.searchsorted(cum, u).clamp_(max=n - 1)
        pot = torch.minimum(closest[:, None], _sq_dist(x, x_sq, x[cand]))  # (N, trials)
        best = pot.sum(0).argmin()
        closest = pot[:, best]
        centers.append(x[cand[best]][None])
    return torch.cat(centers)


def torch_kmeans(x: Tensor, k: int, *, n_init: int = KMEANS_N_INIT, max_iter: int = KMEANS_MAX_ITER,
                 tol: float = 1e-4, seed: int = 0) -> tuple[Tensor, float]:
    """Lloyd's k-means on ``x (N, D)`` from greedy k-means++ seeds, best inertia of ``n_init`` runs.

    Returns (labels (N,) int64 on x's device, inertia). Same stopping rule as scikit-learn: the squared centre
    shift falls below ``tol`` times the mean per-feature variance. An emptied cluster is re-seeded at the point
    farthest from its centre. The data are centred first: the ||x||^2 - 2 x.c + ||c||^2 expansion loses less
    precision in float32 near the origin."""
    x = x.float()
    x = x - x.mean(0)
    k = min(k, len(x))
    x_sq = (x * x).sum(1)
    threshold = tol * float(x.var(0, correction=0).mean())
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with _solver_threads(x.device):
        runs = [_lloyd(x, x_sq, _kmeans_pp(x, x_sq, k, generator), max_iter, threshold) for _ in range(n_init)]
    labels, inertia = min(runs, key=lambda run: run[1])
    return labels, inertia


def _lloyd(x: Tensor, x_sq: Tensor, centers: Tensor, max_iter: int, threshold: float) -> tuple[Tensor, float]:
    """Lloyd iterations from ``centers (K, D)``; (labels (N,), inertia) of the final centres."""
    k = len(centers)
    for _ in range(max_iter):
        nearest, labels = _sq_dist(x, x_sq, centers).min(1)
        counts = torch.bincount(labels, minlength=k)
        new = torch.zeros_like(centers).index_add_(0, labels, x) / counts.clamp_min(1)[:, None]
        empty = counts == 0
        if empty.any():
            new[empty] = x[nearest.topk(int(empty.sum())).indices]
        shift = float(((new - centers) ** 2).sum())  # one host sync per iteration, for the stopping rule
        centers = new
        if shift <= threshold:
            break
    nearest, labels = _sq_dist(x, x_sq, centers).min(1)
    return labels, float(nearest.sum())


# --------------------------------------------------------------------------------------------------------------
# Preprocessings (scikit-learn pipeline steps; a function of the embedding width d)


def _standard(d: int) -> list[tuple[str, Any]]:
    from sklearn.preprocessing import StandardScaler

    return [("scale", StandardScaler())]


def _robust_pca(d: int) -> list[tuple[str, Any]]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import RobustScaler

    return [("scale", RobustScaler()), ("reduce", PCA(n_components=min(50, d)))]


def _minmax_kbest(d: int) -> list[tuple[str, Any]]:
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.preprocessing import MinMaxScaler

    return [("scale", MinMaxScaler()), ("reduce", SelectKBest(f_classif, k=min(50, d)))]


# The published three; the order is the published order (ties in the paper protocol go to the earlier one).
PREPROCESSINGS: dict[str, Callable[[int], list[tuple[str, Any]]]] = {
    "standard": _standard,
    "robust_pca": _robust_pca,
    "minmax_kbest": _minmax_kbest,
}


# --------------------------------------------------------------------------------------------------------------
# Classifier probes: one row each


TorchPredict = Callable[[Tensor, Tensor, Tensor, int], Tensor]


@dataclass(frozen=True)
class Probe:
    """A classifier probe.

    ``estimator(seed)``: a fresh scikit-learn classifier with the fast protocol's fixed hyperparameters (the
    reference, and ``backend: sklearn``). ``grid``: the paper protocol's GridSearchCV grid over the parameters of
    ``paper_estimator(seed)`` (default: ``estimator``). ``torch_predict(train_x, train_y, test_x, num_classes)``:
    the device fast path on preprocessed features, returning labels (M,); None if there is none. ``slow``: the
    training rows are bounded by ``slow_subsample`` instead of ``subsample``. ``options(eval_cfg)``: keyword
    arguments read from the EvalConfig (a probe with knobs); when set, ``estimator``, ``paper_estimator`` and
    ``torch_predict`` receive them, and ``torch_predict`` also ``seed``."""

    estimator: Callable[..., Any]
    grid: dict[str, list[Any]]
    torch_predict: TorchPredict | None = None
    paper_estimator: Callable[..., Any] | None = None
    slow: bool = False
    options: Callable[[EvalConfig], dict[str, Any]] | None = None

    def paper(self, seed: int, **options: Any) -> Any:
        return (self.paper_estimator or self.estimator)(seed, **options)

    def kwargs(self, cfg: EvalConfig | None) -> dict[str, Any]:
        """The keyword arguments this probe takes from ``cfg`` (none without ``options`` or ``cfg``)."""
        return dict(self.options(cfg)) if self.options is not None and cfg is not None else {}


def _sk_logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # lbfgs, multinomial, same budget and tolerance: the problem torch_logreg solves, solved by scipy.
    return LogisticRegression(C=LOGREG_C, max_iter=LOGREG_MAX_ITER, tol=LOGREG_TOL)


def _paper_logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    # liblinear is one-vs-rest; scikit-learn >= 1.8 requires saying so explicitly (as the baseline does).
    return OneVsRestClassifier(LogisticRegression(solver="liblinear", max_iter=1000))


def _sk_mlp(seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(128, 64, 32), early_stopping=True, random_state=seed)


def _sk_random_forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, max_depth=20, n_jobs=-1, random_state=seed)


def _sk_knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=KNN_K, weights="distance")


def _sk_torch_mlp(seed: int, **options: Any) -> Any:
    from aesweep.mlp_probe import TorchMLPClassifier

    return TorchMLPClassifier(seed=seed, **options)


def _torch_mlp_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, **options: Any
                       ) -> Tensor:
    from aesweep import mlp_probe

    return mlp_probe.torch_predict(train_x, train_y, test_x, num_classes, **options)


def _mlp_torch_options(cfg: EvalConfig) -> dict[str, Any]:
    return cfg.mlp_torch.model_dump()


PROBES.add("logreg", Probe(_sk_logreg, {"estimator__C": [0.1, 1, 10]}, torch_predict=torch_logreg,
                           paper_estimator=_paper_logreg),
           "Multinomial logistic regression, C=0.1 (torch L-BFGS on the device; paper: one-vs-rest liblinear)")
PROBES.add("mlp", Probe(_sk_mlp, {"alpha": [1e-4, 1e-3]}, slow=True),
           "scikit-learn MLP 128-64-32 with early stopping")
PROBES.add("random_forest", Probe(_sk_random_forest, {"max_features": ["sqrt", 0.5]}, slow=True),
           "Random forest, 200 trees of depth <= 20")
PROBES.add("knn", Probe(_sk_knn, {"n_neighbors": [5, 15]}, torch_predict=torch_knn),
           "k-nearest neighbours, k=5, distance-weighted (torch cdist + topk on the device)")
PROBES.add("mlp_torch", Probe(_sk_torch_mlp, {"dropout": [0.1, 0.3]}, torch_predict=_torch_mlp_predict,
                              options=_mlp_torch_options),
           "torch MLP on the frozen embeddings (eval.mlp_torch: widths [64], dropout 0.2), Adam, early stopping "
           "on a validation slice, on the device")


def _fit_sized(estimator: Any, n_rows: int, num_classes: int) -> Any:
    """Adapt an estimator (or pipeline) to a tiny training set (label-efficiency points): k <= rows for kNN, no
    early stopping when its 10% validation split would hold fewer than two rows per class."""
    params = estimator.get_params()
    updates: dict[str, Any] = {}
    for key, value in params.items():
        if key.endswith("n_neighbors") and isinstance(value, int) and value > n_rows:
            updates[key] = n_rows
        if key.endswith("early_stopping") and value and n_rows < 20 * num_classes:
            updates[key] = False
    return estimator.set_params(**updates) if updates else estimator


def _use_torch(probe: Probe, backend: str) -> bool:
    # auto and torch both take the fast path where a probe has one; probes without one run scikit-learn.
    return probe.torch_predict is not None and backend != "sklearn"


def fit_predict(name: str, train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, *, num_classes: int,
                preprocessing: str = "standard", backend: str = "auto", seed: int = 0,
                cfg: EvalConfig | None = None) -> np.ndarray:
    """Fit probe ``name`` (fast protocol: fixed hyperparameters) on ``train_x (N, D)`` / ``train_y (N,)`` after
    ``preprocessing`` fitted on the training rows; predicted labels (M,) for ``test_x (M, D)`` as a numpy array.
    ``cfg``: the EvalConfig a probe with knobs reads them from (``Probe.options``; defaults without it).

    Torch fast paths run on the device of ``train_x``: ``standard`` is done in torch there; the other two
    preprocessings are fitted by scikit-learn on the host and their output moved back to the device."""
    probe: Probe = PROBES.get(name)
    if probe.options is not None and cfg is None:
        from aesweep.spec import EvalConfig

        cfg = EvalConfig()
    options = probe.kwargs(cfg)
    steps = PREPROCESSINGS[preprocessing]
    if _use_torch(probe, backend):
        xtr = _tensor(train_x)
        xte, ytr = _tensor(test_x, xtr.device), torch.as_tensor(_labels(train_y), device=xtr.device)
        if preprocessing == "standard":
            xtr, xte = standardize(xtr, xte)
        else:
            from sklearn.pipeline import Pipeline

            with _sklearn_threads():
                prep = Pipeline(steps(xtr.shape[1])).fit(_numpy(train_x), _labels(train_y))
                xtr, xte = (_tensor(prep.transform(_numpy(a)), ytr.device) for a in (train_x, test_x))
        extra = {**options, "seed": seed} if probe.options is not None else {}
        return probe.torch_predict(xtr, ytr, xte, num_classes, **extra).cpu().numpy()

    from sklearn.pipeline import Pipeline

    xtr_np, ytr_np = _numpy(train_x), _labels(train_y)
    pipe = Pipeline(steps(xtr_np.shape[1]) + [("clf", probe.estimator(seed, **options))])
    with _sklearn_threads():
        return _fit_sized(pipe, len(ytr_np), num_classes).fit(xtr_np, ytr_np).predict(_numpy(test_x))


def paper_probe(name: str, train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                num_classes: int, seed: int = 0, n_jobs: int = -1, cfg: EvalConfig | None = None
                ) -> tuple[dict[str, float], Any]:
    """The published protocol for probe ``name``: for each preprocessing, GridSearchCV(cv=3) over the probe's grid
    (refit on all training rows), 5-fold ``cross_val_score`` of the best pipeline and its test predictions.

    Returns (metrics of the preprocessing with the best test accuracy: acc, f1, acc/class_<k>, cv_mean, cv_std;
    that fitted pipeline). ``n_jobs`` parallelises the CV folds (results do not depend on it)."""
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline

    probe: Probe = PROBES.get(name)
    options = probe.kwargs(cfg)
    xtr, ytr, xte, yte = _numpy(train_x), _labels(train_y), _numpy(test_x), _labels(test_y)
    best: tuple[float, dict[str, float], Any] | None = None
    for steps in PREPROCESSINGS.values():
        pipe = Pipeline(steps(xtr.shape[1]) + [("clf", probe.paper(seed, **options))])
        grid = {f"clf__{key}": values for key, values in probe.grid.items()}
        with _sklearn_threads():
            search = GridSearchCV(pipe, grid, cv=3, n_jobs=n_jobs).fit(xtr, ytr)
            cv = cross_val_score(search.best_estimator_, xtr, ytr, cv=5, n_jobs=n_jobs)
            pred = search.best_estimator_.predict(xte)
        scores = classification_scores(yte, pred, num_classes, f"probe/{name}")
        scores[f"probe/{name}/cv_mean"] = float(cv.mean())
        scores[f"probe/{name}/cv_std"] = float(cv.std())
        acc = scores[f"probe/{name}/acc"]
        if best is None or acc > best[0]:
            best = (acc, scores, search.best_estimator_)
    assert best is not None
    return best[1], best[2]


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

        return KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed).fit_predict(_numpy(x))
    return torch_kmeans(x, k, n_init=KMEANS_N_INIT, seed=seed)[0].cpu().numpy()


def _gmm(x: Tensor, k: int, cfg: EvalConfig, seed: int) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    # Diagonal covariances by default: full ones cost ~9 s per EM iteration at 50k x 256 and need D^2/2 parameters
    # per component; the published protocol used full ones, so paper does.
    covariance = "full" if cfg.protocol == "paper" else "diag"
    with _sklearn_threads():
        return GaussianMixture(n_components=k, covariance_type=covariance, random_state=seed).fit_predict(_numpy(x))


def _hdbscan(x: Tensor, k: int, cfg: EvalConfig, seed: int) -> np.ndarray:
    """HDBSCAN (the ``hdbscan`` package) on a PCA reduction to ``cluster_pca_dim``; k is unused (HDBSCAN picks
    the number of clusters). The PCA keeps the tree-based neighbour search fast: ~0.5 s at 5000 x 32.

    Noise points keep label -1; ARI and NMI then treat the noise as one more cluster of its own (as the published
    protocol did), ``n_clusters`` excludes it and ``noise_frac`` reports its share."""
    import hdbscan
    from sklearn.decomposition import PCA

    z = _numpy(x)
    if cfg.cluster_pca_dim is not None and cfg.cluster_pca_dim < min(z.shape):
        with _sklearn_threads():
            z = PCA(n_components=cfg.cluster_pca_dim, random_state=seed).fit_transform(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # hdbscan passes a renamed scikit-learn argument
        return hdbscan.HDBSCAN(min_cluster_size=cfg.hdbscan_min_cluster_size, core_dist_n_jobs=-1).fit_predict(z)


CLUSTERERS.add("kmeans", Clusterer(_kmeans, bounded=False),
               "k-means, k = number of classes (torch Lloyd + k-means++ on the device; all test rows)")
CLUSTERERS.add("gmm", Clusterer(_gmm), "Gaussian mixture, diagonal covariances, k = number of classes")
CLUSTERERS.add("hdbscan", Clusterer(_hdbscan),
               "HDBSCAN on a PCA reduction; noise (-1) is scored as one more cluster, noise_frac reported")


# --------------------------------------------------------------------------------------------------------------
# Entry points


def online_probe(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                 num_classes: int | None = None, k: int = KNN_K, linear: bool = True,
                 max_iter: int = 50) -> dict[str, float]:
    """Cheap probe for the training loop (solo-learn's online probe, without a trained head): torch kNN and,
    if ``linear``, an L-BFGS logistic regression capped at ``max_iter`` iterations, both on standardised
    features, on the device of ``train_x``. Inputs: a few thousand embeddings ``(N, D)`` / ``(M, D)`` and labels;
    the caller bounds them (``EvalConfig.online_probe_size``). Returns ``val/probe/knn/acc`` and
    ``val/probe/logreg/acc``. Well under a second on a CPU at 2000 x 64."""
    xtr = _tensor(train_x)
    xte = _tensor(test_x, xtr.device)
    ytr = torch.as_tensor(_labels(train_y), device=xtr.device)
    yte = torch.as_tensor(_labels(test_y), device=xtr.device)
    if num_classes is None:
        num_classes = int(max(ytr.max(), yte.max())) + 1
    xtr, xte = standardize(xtr, xte)
    out = {"val/probe/knn/acc": float((torch_knn(xtr, ytr, xte, num_classes, k=k) == yte).float().mean())}
    if linear:
        pred = torch_logreg(xtr, ytr, xte, num_classes, max_iter=max_iter)
        out["val/probe/logreg/acc"] = float((pred == yte).float().mean())
    return out


@dataclass
class _Timer:
    seconds: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def run_probes(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, cfg: EvalConfig,
               num_classes: int, seed: int = 0, val_x: ArrayLike | None = None,
               val_y: ArrayLike | None = None) -> dict[str, float]:
    """Every configured probe, label-efficiency curve and clusterer on one set of embeddings.

    ``train_x (N, D)``, ``train_y (N,)``, ``test_x (M, D)``, ``test_y (M,)``: tensors (any device) or numpy.
    Classifiers train on a stratified seeded subsample of at most ``cfg.subsample`` rows (``cfg.slow_subsample``
    for random_forest and mlp) and are scored on all test rows. ``acc_at_<n>`` retrains the same classifier (paper:
    the selected pipeline) on exactly min(n, count) rows of every class, drawn from all training rows, so the
    row bounds do not apply to those points; ``acc_at_all`` is ``acc``. Clusterers cluster the test rows
    (at most ``cfg.cluster_subsample`` of them for gmm and hdbscan) into ``num_classes`` clusters.
    Each probe's wall time (fit + predict, GPU work included) is ``time/probe/<name>_s``, its curve's
    ``time/probe/<name>/label_efficiency_s``; each clusterer's ``time/cluster/<method>_s``.
    With ``cfg.probe_splits`` (fast protocol) and ``val_x (V, D)`` / ``val_y (V,)``, each classifier also scores
    the rows it was fitted on (``probe/<name>/train_acc``) and the validation rows (``probe/<name>/val_acc``),
    from the same fit: one prediction over the three row sets."""
    xtr = _tensor(train_x)
    xte = _tensor(test_x, xtr.device)
    ytr, yte = _labels(train_y), _labels(test_y)
    splits = cfg.probe_splits and cfg.protocol == "fast" and val_x is not None and val_y is not None
    xval = _tensor(val_x, xtr.device) if splits else None
    yval = _labels(val_y) if splits else None
    out: dict[str, float] = {}

    for name in cfg.probes:
        probe: Probe = PROBES.get(name)
        rows = stratified_subset(ytr, cfg.slow_subsample if probe.slow else cfg.subsample, seed)
        rows_t = torch.as_tensor(rows, device=xtr.device)
        with _Timer() as timer:
            if cfg.protocol == "paper":
                scores, chosen = paper_probe(name, xtr[rows_t], ytr[rows], xte, yte, num_classes=num_classes,
                                             seed=seed, cfg=cfg)
            elif splits:
                pred = fit_predict(name, xtr[rows_t], ytr[rows], torch.cat([xtr[rows_t], xval, xte]),
                                   num_classes=num_classes, preprocessing=cfg.preprocessing, backend=cfg.backend,
                                   seed=seed, cfg=cfg)
                n_fit, n_val = len(rows), len(yval)
                scores = classification_scores(yte, pred[n_fit + n_val:], num_classes, f"probe/{name}")
                scores[f"probe/{name}/train_acc"] = float(np.mean(pred[:n_fit] == ytr[rows]))
                scores[f"probe/{name}/val_acc"] = float(np.mean(pred[n_fit:n_fit + n_val] == yval))
            else:
                pred = fit_predict(name, xtr[rows_t], ytr[rows], xte, num_classes=num_classes,
                                   preprocessing=cfg.preprocessing, backend=cfg.backend, seed=seed, cfg=cfg)
                scores = classification_scores(yte, pred, num_classes, f"probe/{name}")
        out.update(scores)
        out[f"time/probe/{name}_s"] = timer.seconds
        if not cfg.label_efficiency:
            continue
        out[f"probe/{name}/acc_at_all"] = scores[f"probe/{name}/acc"]
        with _Timer() as timer:
            for n in sorted(set(cfg.label_efficiency)):
                sub = per_class_subset(ytr, n, seed)
                if cfg.protocol == "paper":
                    from sklearn.base import clone

                    with _sklearn_threads():
                        sub_x = _numpy(xtr[torch.as_tensor(sub, device=xtr.device)])
                        model = _fit_sized(clone(chosen), len(sub), num_classes).fit(sub_x, ytr[sub])
                        pred = model.predict(_numpy(xte))
                else:
                    sub_t = torch.as_tensor(sub, device=xtr.device)
                    pred = fit_predict(name, xtr[sub_t], ytr[sub], xte, num_classes=num_classes,
                                       preprocessing=cfg.preprocessing, backend=cfg.backend, seed=seed, cfg=cfg)
                out[f"probe/{name}/acc_at_{n}"] = float(np.mean(pred == yte))
        out[f"time/probe/{name}/label_efficiency_s"] = timer.seconds

    for method in cfg.clustering:
        clusterer: Clusterer = CLUSTERERS.get(method)
        rows = stratified_subset(yte, cfg.cluster_subsample if clusterer.bounded else None, seed)
        with _Timer() as timer:
            labels = clusterer.fit_predict(xte[torch.as_tensor(rows, device=xte.device)], num_classes, cfg, seed)
        out.update(cluster_scores(yte[rows], labels, method))
        if method == "hdbscan" or (labels < 0).any():
            out[f"cluster/{method}/noise_frac"] = float(np.mean(labels < 0))
        out[f"time/cluster/{method}_s"] = timer.seconds
    return out
