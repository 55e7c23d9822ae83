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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aesweep.evaluation.clustering import Clusterer, cluster_scores
from aesweep.evaluation.solvers import (
    KNN_K,
    LOGREG_C,
    LOGREG_MAX_ITER,
    LOGREG_TOL,
    ArrayLike,
    float64_array,
    float_tensor,
    labels_array,
    sklearn_threads,
    standardize,
    torch_knn,
    torch_logreg,
)
from aesweep.registry import CLUSTERERS, PROBES
from aesweep.spec.trial import EvalConfig

# --------------------------------------------------------------------------------------------------------------
# Conversions and row selection


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



# --------------------------------------------------------------------------------------------------------------
# Scores


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, prefix: str) -> dict[str, float]:
    """``{prefix}/acc``, ``{prefix}/f1`` (macro over the classes present in ``y_true``) and
    ``{prefix}/acc/class_<k>`` (recall of class k, for each k present in ``y_true``); ``y_* (M,)`` ints."""
    from sklearn.metrics import f1_score

    y_true, y_pred = labels_array(y_true), labels_array(y_pred)
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
    # Deferred, as every scikit-learn import here: mlp_probe subclasses sklearn's estimators (about 1 s to import),
    # which a trial that runs no probe never pays.
    from aesweep.evaluation.mlp_probe import TorchMLPClassifier

    return TorchMLPClassifier(seed=seed, **options)


def _torch_mlp_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, **options: Any
                       ) -> Tensor:
    from aesweep.evaluation import mlp_probe

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

        cfg = EvalConfig()
    options = probe.kwargs(cfg)
    steps = PREPROCESSINGS[preprocessing]
    if _use_torch(probe, backend):
        xtr = float_tensor(train_x)
        xte, ytr = float_tensor(test_x, xtr.device), torch.as_tensor(labels_array(train_y), device=xtr.device)
        if preprocessing == "standard":
            xtr, xte = standardize(xtr, xte)
        else:
            from sklearn.pipeline import Pipeline

            with sklearn_threads():
                prep = Pipeline(steps(xtr.shape[1])).fit(float64_array(train_x), labels_array(train_y))
                xtr, xte = (float_tensor(prep.transform(float64_array(a)), ytr.device) for a in (train_x, test_x))
        extra = {**options, "seed": seed} if probe.options is not None else {}
        return probe.torch_predict(xtr, ytr, xte, num_classes, **extra).cpu().numpy()

    from sklearn.pipeline import Pipeline

    xtr_np, ytr_np = float64_array(train_x), labels_array(train_y)
    pipe = Pipeline(steps(xtr_np.shape[1]) + [("clf", probe.estimator(seed, **options))])
    with sklearn_threads():
        return _fit_sized(pipe, len(ytr_np), num_classes).fit(xtr_np, ytr_np).predict(float64_array(test_x))


def paper_probe(name: str, train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                num_classes: int, seed: int = 0, n_jobs: int = -1, cfg: EvalConfig | None = None
                ) -> tuple[dict[str, float], Any]:
    """The published protocol for probe ``name``: for each preprocessing, GridSearchCV(cv=3) over the probe's grid
    (refit on all training rows), 5-fold ``cross_val_score`` of the best pipeline and its test predictions.

    Returns (metrics of the preprocessing with the best test accuracy: acc, f1, acc/class_<k>, cv_mean, cv_std;
    that fitted pipeline). The study chooses the preprocessing on test; ``acc_cv_selected`` is the test accuracy of
    the one the 5-fold CV mean would choose instead (test measured, never chosen on). ``n_jobs`` parallelises the CV
    folds (results do not depend on it)."""
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline

    probe: Probe = PROBES.get(name)
    options = probe.kwargs(cfg)
    xtr, ytr, xte, yte = float64_array(train_x), labels_array(train_y), float64_array(test_x), labels_array(test_y)
    best: tuple[float, dict[str, float], Any] | None = None
    by_cv: tuple[float, float] | None = None  # (cv mean, test accuracy) of the CV's choice
    for steps in PREPROCESSINGS.values():
        pipe = Pipeline(steps(xtr.shape[1]) + [("clf", probe.paper(seed, **options))])
        grid = {f"clf__{key}": values for key, values in probe.grid.items()}
        with sklearn_threads():
            search = GridSearchCV(pipe, grid, cv=3, n_jobs=n_jobs).fit(xtr, ytr)
            cv = cross_val_score(search.best_estimator_, xtr, ytr, cv=5, n_jobs=n_jobs)
            pred = search.best_estimator_.predict(xte)
        scores = classification_scores(yte, pred, num_classes, f"probe/{name}")
        scores[f"probe/{name}/cv_mean"] = float(cv.mean())
        scores[f"probe/{name}/cv_std"] = float(cv.std())
        acc = scores[f"probe/{name}/acc"]
        if best is None or acc > best[0]:
            best = (acc, scores, search.best_estimator_)
        if by_cv is None or cv.mean() > by_cv[0]:
            by_cv = (float(cv.mean()), acc)
    assert best is not None and by_cv is not None
    return {**best[1], f"probe/{name}/acc_cv_selected": by_cv[1]}, best[2]



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
    xtr = float_tensor(train_x)
    xte = float_tensor(test_x, xtr.device)
    ytr = torch.as_tensor(labels_array(train_y), device=xtr.device)
    yte = torch.as_tensor(labels_array(test_y), device=xtr.device)
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
    xtr = float_tensor(train_x)
    xte = float_tensor(test_x, xtr.device)
    ytr, yte = labels_array(train_y), labels_array(test_y)
    splits = cfg.probe_splits and cfg.protocol == "fast" and val_x is not None and val_y is not None
    xval = float_tensor(val_x, xtr.device) if splits else None
    yval = labels_array(val_y) if splits else None
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

                    with sklearn_threads():
                        sub_x = float64_array(xtr[torch.as_tensor(sub, device=xtr.device)])
                        model = _fit_sized(clone(chosen), len(sub), num_classes).fit(sub_x, ytr[sub])
                        pred = model.predict(float64_array(xte))
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

