"""Torch solvers for the fast probe protocol: standardisation, L2 logistic regression (L-BFGS), distance-weighted
kNN, k-means++ with Lloyd's iterations. Each runs on the device its inputs live on and solves the problem its
scikit-learn counterpart solves (tests hold them equal on real Fashion-MNIST features); the thread limits that
keep small-step CPU solvers fast under a shared machine live here too.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    pass



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


def float_tensor(x: ArrayLike, device: torch.device | None = None) -> Tensor:
    """float32 tensor (a view where possible) on ``device`` (default: where ``x`` already is)."""
    t = torch.as_tensor(x)
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def labels_array(y: ArrayLike) -> np.ndarray:
    """int64 numpy labels (N,) on the host: scikit-learn and the metrics want them there."""
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    return np.asarray(y).astype(np.int64).reshape(-1)


def float64_array(x: ArrayLike) -> np.ndarray:
    """float64 host array: scikit-learn's reference paths work in float64."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@contextlib.contextmanager
def sklearn_threads() -> Iterator[None]:
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
def solver_threads(device: torch.device) -> Iterator[None]:
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
    with torch.inference_mode(False), torch.no_grad(), solver_threads(train_x.device):
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
    with solver_threads(x.device):
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



