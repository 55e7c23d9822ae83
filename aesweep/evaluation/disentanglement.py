"""Disentanglement measures on datasets whose generative factors are known (``shapes``, ``dsprites``).

``eval.disentanglement`` names the measures; each is one registered function ``(train, test, cfg, seed) -> {key:
value}`` on ``FactorCodes`` (codes of train- and test-split images with their factors' classes), declared with the
keys it logs. Definitions are disentanglement_lib's (Locatello et al. 2019, evaluation/metrics/), whose numbers the
literature prints; where this code departs from it the function says so.

| name | logs | what (range; higher is more disentangled) |
|---|---|---|
| mig | dis/mig | Chen et al. 2018: per factor, the gap between the two code dimensions with the most mutual information with it, over its entropy; mean over factors (0..1) |
| sap | dis/sap | Kumar et al. 2018: per factor, the gap between the test accuracies of the two best single-dimension linear SVMs; mean over factors (0..1) |
| dci | dis/dci_disentanglement, _completeness, _informativeness | Eastwood & Williams 2018: from an importance matrix of gradient-boosted trees, how few factors each dimension serves, how few dimensions each factor uses (0..1), and the trees' test accuracy |
| betavae | dis/betavae_score | Higgins et al. 2017: accuracy of a logistic regression telling which factor two batches shared, from the mean absolute difference of their codes (chance 1/F .. 1) |
| factorvae | dis/factorvae_score | Kim & Mnih 2018: accuracy of the majority vote "dimension of least normalised variance -> the factor held fixed" (chance ~1/F .. 1) |
| modularity | dis/modularity | Ridgeway & Mozer 2018: per dimension, 1 - the share of its squared mutual information that is not with its main factor, scaled; mean over dimensions (0..1) |
| explicitness | dis/explicitness | Ridgeway & Mozer 2018: test ROC-AUC of a logistic regression predicting each factor from the whole code; mean over factors and classes (0.5 chance .. 1) |

Codes are what the probes read (``model.embed``: z, mu for a gaussian bottleneck) of ``num_train`` train-split and
``num_test`` test-split images, seeded draws without replacement, encoded once on the model's device
(``DisentanglementConfig``: disentanglement_lib's study defaults divided by 5). MIG and modularity read the train
codes; SAP, DCI and explicitness fit on the train codes and score on the test codes.

Factors become classes (``factor_classes``): a factor with at most ``GRID_MAX_VALUES`` distinct values is
categorical, one class per value (every factor of shapes and dSprites; disentanglement_lib reads dSprites'
latents_classes, the same classes). A factor with more values is continuous: it is cut into ``num_bins`` equal-width
bins, the codes' discretisation, and a "fixed value" below is then a bin. A factor with one value is dropped.

BetaVAE and FactorVAE need batches of images with one factor fixed. disentanglement_lib renders them from chosen
factors; here they are drawn, with replacement, from the encoded rows by an index of rows per class of each factor
(``FactorIndex``): uniform draws from the rows that share the class, which is the library's sampling exactly on a
full factorial grid drawn uniformly (dSprites) and close to it on a near-full grid (shapes: a larger size leaves
fewer positions). Training points come from the train codes, evaluation points from the test codes.

DCI's importance is disentanglement_lib's: scikit-learn's GradientBoostingClassifier (100 stages of depth-3 trees)
per factor, importance = its feature_importances_. Not the lasso of Eastwood & Williams' own code, because (1) the
published tables (Locatello et al. 2019, disent) are made with these trees, so dis/dci_* compare with them; (2) trees
credit a dimension that determines a factor non-linearly or non-monotonically, which a linear lasso would count as
uninformative; (3) trees need no choice of scaling or penalty. Their cost is this module's largest: about 1-15 s per
factor for 2000 codes on one CPU core (multi-class boosting fits one tree per class per stage).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor, nn

from aesweep.data.datasets import Dataset
from aesweep.evaluation.generative import embed_split, subsample
from aesweep.registry import DISENTANGLEMENT
from aesweep.spec.trial import DisentanglementConfig, EvalConfig

# scikit-learn (SVMs, boosted trees, logistic regression) is imported inside the measures that fit one: importing
# it costs a worker seconds, and a trial that asks for no measure never needs it.

_log = logging.getLogger(__name__)

# Every factor of shapes (at most 22 values) and of dSprites (at most 40) is on a grid below this.
GRID_MAX_VALUES = 64
# Codes gathered for BetaVAE / FactorVAE batches at a time: (points, batch, D) float64 blocks of at most 64 MB each.
CHUNK_ELEMS = 1 << 23


# --------------------------------------------------------------------------------------------------------------
# Codes with factors


class FactorIndex:
    """The rows of a (N, F) class array grouped by each factor's class: ``sample`` draws rows holding given classes."""

    def __init__(self, classes: np.ndarray):
        self.order, self.start, self.count = [], [], []
        for col in classes.T:
            count = np.bincount(col)
            self.order.append(np.argsort(col, kind="stable"))
            self.count.append(count)
            self.start.append(np.cumsum(count) - count)

    def sample(self, factor: np.ndarray, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each m, a row drawn uniformly (with replacement) among those whose factor ``factor[m]`` has class
        ``value[m]``: int64 (M,). Every pair asked for must occur (it does when the class was read off a row)."""
        u = rng.random(len(factor))
        out = np.empty(len(factor), np.int64)
        for f in np.unique(factor):
            sel = factor == f
            count = self.count[f][value[sel]]
            out[sel] = self.order[f][self.start[f][value[sel]] + np.minimum((u[sel] * count).astype(np.int64),
                                                                             count - 1)]
        return out


@dataclass
class FactorCodes:
    """Codes of N images whose factors are known. ``codes``: float (N, D) on any device (the model's);
    ``classes``: int64 numpy (N, F), factor f's class 0..K_f-1 (``factor_classes``); ``names``: the F factors."""

    codes: Tensor
    classes: np.ndarray
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or self.classes.ndim != 2 or len(self.codes) != len(self.classes):
            raise ValueError(f"codes (N, D) and classes (N, F) expected, got {tuple(self.codes.shape)} and "
                             f"{self.classes.shape}")
        self.classes = np.asarray(self.classes, np.int64)

    @property
    def num_factors(self) -> int:
        return self.classes.shape[1]

    @cached_property
    def array(self) -> np.ndarray:
        """The codes as float64 numpy (N, D) on the CPU, for scikit-learn."""
        return self.codes.detach().double().cpu().numpy()

    @cached_property
    def index(self) -> FactorIndex:
        return FactorIndex(self.classes)


def histogram_discretize(x: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column of x (N, D) cut into ``num_bins`` equal-width bins over its range: int64 (N, D) in
    0..num_bins-1, the maximum in the last bin, a constant column all in one bin (np.histogram widens its range to
    the value +- 0.5). disentanglement_lib's discretiser (np.digitize on np.histogram's edges, whose bins count from
    1) minus 1, edge for edge. x must be finite."""
    out = np.empty(x.shape, np.int64)
    for d in range(x.shape[1]):
        edges = np.histogram_bin_edges(x[:, d], num_bins)
        out[:, d] = np.searchsorted(edges[:-1], x[:, d], side="right") - 1
    return out


def factor_classes(factors: Sequence[np.ndarray], num_bins: int = 20) -> tuple[list[np.ndarray], list[int]]:
    """Factor values (a list of (N_i, F) arrays: train and test) as classes under one mapping for all of them.

    A factor with at most GRID_MAX_VALUES distinct values (over all arrays) is categorical: class c is its c-th
    smallest value. One with more is continuous: ``num_bins`` equal-width bins over its range (``histogram_
    discretize``), empty bins skipped. A factor with a single value is dropped (MIG would divide by its zero
    entropy). Returns the (N_i, F') int64 class arrays and the indices of the F' factors kept.
    """
    joint = np.concatenate([np.asarray(f, np.float64) for f in factors])
    cols, kept = [], []
    for j in range(joint.shape[1]):
        values, inverse = np.unique(joint[:, j], return_inverse=True)
        if len(values) < 2:
            continue
        if len(values) > GRID_MAX_VALUES:
            inverse = np.unique(histogram_discretize(joint[:, j:j + 1], num_bins)[:, 0], return_inverse=True)[1]
        cols.append(inverse.reshape(-1))
        kept.append(j)
    classes = np.stack(cols, 1).astype(np.int64) if cols else np.zeros((len(joint), 0), np.int64)
    return np.split(classes, np.cumsum([len(f) for f in factors])[:-1]), kept


# --------------------------------------------------------------------------------------------------------------
# Information


def mutual_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mutual information in nats between every column of ``a`` (N, D) and every column of ``b`` (N, F), both
    non-negative int class indices: (D, F). The plug-in estimate from the contingency table, as
    sklearn.metrics.mutual_info_score computes it; one bincount per column of ``a`` fills its F tables at once."""
    n, sizes = len(a), b.max(0) + 1
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total = int(sizes.sum())
    shifted = b + offsets  # factor f's class c is column offsets[f] + c of one wide table
    out = np.empty((a.shape[1], b.shape[1]))
    for d in range(a.shape[1]):
        ka = int(a[:, d].max()) + 1
        joint = np.bincount((a[:, d, None] * total + shifted).ravel(), minlength=ka * total).reshape(ka, total) / n
        pa, pb = joint[:, :sizes[0]].sum(1), joint.sum(0)  # every factor's table has the same row sums
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(joint > 0, joint * np.log(joint / (pa[:, None] * pb[None, :])), 0.0)
        out[d] = np.add.reduceat(terms.sum(0), offsets)
    return np.maximum(out, 0.0)  # rounding can leave -1e-17 where the true value is 0


def entropy(b: np.ndarray) -> np.ndarray:
    """Entropy in nats of each column of int class indices b (N, F): (F,)."""
    out = np.empty(b.shape[1])
    for f in range(b.shape[1]):
        p = np.bincount(b[:, f]) / len(b)
        out[f] = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return out


def _gap(scores: np.ndarray) -> np.ndarray:
    """Per column of scores (D, F): the best minus the second best row (the second is 0 when D = 1)."""
    top = np.sort(scores, axis=0)[::-1]
    return top[0] - (top[1] if len(top) > 1 else 0.0)


def mig_score(codes: np.ndarray, classes: np.ndarray, num_bins: int = 20) -> float:
    """MIG of codes (N, D) for factor classes (N, F): mean over factors of (I(z_a; v) - I(z_b; v)) / H(v), z_a and
    z_b the dimensions with the largest and second-largest mutual information with factor v, codes discretised into
    ``num_bins`` bins (``histogram_discretize``). 0 when two dimensions know a factor equally (a duplicated code)."""
    mi = mutual_information(histogram_discretize(codes, num_bins), classes)
    return float(np.mean(_gap(mi) / entropy(classes)))


def modularity_score(codes: np.ndarray, classes: np.ndarray, num_bins: int = 20) -> float:
    """Modularity of codes (N, D) for classes (N, F): mean over dimensions of 1 - delta, delta = (sum_f m_f^2 -
    max_f m_f^2) / (max_f m_f^2 (F - 1)), m = the dimension's mutual information with each factor (codes discretised
    as for MIG). A dimension that knows nothing scores 0 (disentanglement_lib's rule), so dead dimensions lower it;
    with one factor every informative dimension scores 1 (the library divides 0 by 0)."""
    sq = mutual_information(histogram_discretize(codes, num_bins), classes) ** 2
    best = sq.max(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (sq.sum(1) - best) / (best * max(sq.shape[1] - 1, 1))
    return float(np.mean(np.where(best > 0, 1.0 - delta, 0.0)))


# --------------------------------------------------------------------------------------------------------------
# Predictors


@contextmanager
def _quiet() -> Iterator[None]:
    # disentanglement_lib's classifiers as it runs them (lbfgs / liblinear at their default iteration limits): a fit
    # stopped at the limit is what the published numbers are, so the convergence warning says nothing new.
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _single_class(y: np.ndarray) -> bool:
    return len(np.unique(y)) < 2


def sap_matrix(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray,
               seed: int = 0) -> np.ndarray:
    """SAP's score matrix (D, F): the test accuracy of a linear SVM (C = 0.01, balanced class weights) that
    predicts factor f's class from code dimension d alone, fitted on ``train`` (N, D) / ``train_y`` (N, F)."""
    from sklearn.svm import LinearSVC

    out = np.zeros((train.shape[1], train_y.shape[1]))
    with _quiet():
        for f in range(train_y.shape[1]):
            if _single_class(train_y[:, f]):  # nothing to separate: the constant prediction's accuracy
                out[:, f] = np.mean(test_y[:, f] == train_y[0, f])
                continue
            for d in range(train.shape[1]):
                svm = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                svm.fit(train[:, d:d + 1], train_y[:, f])
                out[d, f] = np.mean(svm.predict(test[:, d:d + 1]) == test_y[:, f])
    return out


def sap_score(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray, seed: int = 0) -> float:
    """SAP: mean over factors of the gap between the two best dimensions of ``sap_matrix`` (disentanglement_lib's
    discrete-factor variant; 0 for a duplicated code)."""
    return float(np.mean(_gap(sap_matrix(train, train_y, test, test_y, seed))))


def dci_importance(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray,
                   seed: int = 0) -> tuple[np.ndarray, float, float]:
    """DCI's importance matrix R (D, F) = |feature_importances_| of a GradientBoostingClassifier (scikit-learn's
    defaults, ``random_state=seed``) per factor fitted on the train codes, and the trees' mean accuracy over factors
    on the train and on the test codes (informativeness)."""
    from sklearn.ensemble import GradientBoostingClassifier

    importance = np.zeros((train.shape[1], train_y.shape[1]))
    train_acc, test_acc = [], []
    for f in range(train_y.shape[1]):
        if _single_class(train_y[:, f]):
            train_acc.append(1.0)
            test_acc.append(float(np.mean(test_y[:, f] == train_y[0, f])))
            continue
        trees = GradientBoostingClassifier(random_state=seed).fit(train, train_y[:, f])
        importance[:, f] = np.abs(trees.feature_importances_)
        train_acc.append(float(np.mean(trees.predict(train) == train_y[:, f])))
        test_acc.append(float(np.mean(trees.predict(test) == test_y[:, f])))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _one_minus_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """1 - H(p) / log(base) per column of non-negative ``weights`` (K, M), p the column normalised after adding
    1e-11 (disentanglement_lib's smoothing, so an all-zero column is uniform: score 0); 1 when base is 1."""
    if base < 2:
        return np.ones(weights.shape[1])
    p = weights + 1e-11
    p = p / p.sum(0)
    return 1.0 - (-(p * np.log(p)).sum(0)) / math.log(base)


def _weighted(scores: np.ndarray, weights: np.ndarray) -> float:
    # Weights: each code's (or factor's) share of the total importance; uniform when nothing is important.
    return float(np.sum(scores * (weights / weights.sum() if weights.sum() > 0 else 1.0 / len(weights))))


def dci_disentanglement(importance: np.ndarray) -> float:
    """sum_d rho_d (1 - H_F(R_d.)), rho_d = dimension d's share of the importance: 1 when each dimension serves one
    factor. A dimension no tree uses weighs nothing (dead dimensions do not lower it)."""
    return _weighted(_one_minus_entropy(importance.T, importance.shape[1]), importance.sum(1))


def dci_completeness(importance: np.ndarray) -> float:
    """sum_f rho_f (1 - H_D(R_.f)), rho_f = factor f's share: 1 when each factor is captured by one dimension (a
    duplicated dimension halves a factor's importance and lowers it)."""
    return _weighted(_one_minus_entropy(importance, importance.shape[0]), importance.sum(0))


def explicitness_score(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    """Explicitness: per factor, a LogisticRegression (scikit-learn's defaults, disentanglement_lib's) on the codes
    standardised by the train mean and std predicts the class; its ROC-AUC on the test codes, one class against
    the rest, averaged over classes (the library's macro average), then over factors. Departures: a constant
    dimension is centred, not divided by its zero std (the library would feed NaN); a class absent from the test
    codes, or the only one there, has no AUC and is skipped (the library would misalign or fail)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (train - mean) / std, (test - mean) / std
    scores = []
    with _quiet():
        for f in range(train_y.shape[1]):
            if _single_class(train_y[:, f]):
                scores.append(0.5)
                continue
            clf = LogisticRegression().fit(x_train, train_y[:, f])
            proba = clf.predict_proba(x_test)
            onehot = test_y[:, f, None] == clf.classes_[None, :]
            aucs = [roc_auc_score(onehot[:, c], proba[:, c]) for c in range(len(clf.classes_))
                    if 0 < onehot[:, c].sum() < len(onehot)]
            scores.append(float(np.mean(aucs)) if aucs else 0.5)
    return float(np.mean(scores))


# --------------------------------------------------------------------------------------------------------------
# Interventional: batches with one factor fixed


def _gather(codes: Tensor, reduce: Callable[..., Tensor], *rows: np.ndarray) -> Tensor:
    """reduce(codes[rows_1], codes[rows_2], ...) over blocks of points: each rows_i (P, B) int -> (P, D) on the
    codes' device, at most CHUNK_ELEMS gathered floats per block."""
    p, b = rows[0].shape
    step = max(1, CHUNK_ELEMS // max(b * codes.shape[1], 1))
    parts = []
    for i in range(0, p, step):
        gathered = [codes[torch.as_tensor(r[i:i + step], device=codes.device)].double() for r in rows]
        parts.append(reduce(*gathered))
    return torch.cat(parts) if parts else torch.empty(0, codes.shape[1], dtype=torch.float64, device=codes.device)


def betavae_points(data: FactorCodes, n: int, batch_size: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """n BetaVAE points from ``data``: per point a factor k (uniform), ``batch_size`` rows (uniform) and for each a
    partner row with the same class of k; the feature is the mean over the pairs of |z_1 - z_2| (D,), the label k.
    Returns features (n, D) float64 and labels (n,) int64."""
    k = rng.integers(data.num_factors, size=n)
    first = rng.integers(len(data.classes), size=(n, batch_size))
    factor = np.repeat(k, batch_size)
    second = data.index.sample(factor, data.classes[first.ravel(), factor], rng).reshape(n, batch_size)
    features = _gather(data.codes, lambda a, b: (a - b).abs().mean(1), first, second)
    return features.cpu().numpy(), k


def betavae_score(train: FactorCodes, test: FactorCodes, batch_size: int = 64, num_points: int = 2000,
                  num_eval_points: int = 1000, seed: int = 0) -> float:
    """The BetaVAE score: a LogisticRegression (scikit-learn's defaults, ``random_state=seed``) fitted on
    ``num_points`` points of the train codes (``betavae_points``), its accuracy on ``num_eval_points`` points of the
    test codes. 1 when the held factor shows as a zero in one dimension; 1/F for a code that knows nothing."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x, y = betavae_points(train, num_points, batch_size, rng)
    x_eval, y_eval = betavae_points(test, num_eval_points, batch_size, rng)
    if _single_class(y):
        return float(np.mean(y_eval == y[0]))
    with _quiet():
        clf = LogisticRegression(random_state=seed).fit(x, y)
    return float(clf.score(x_eval, y_eval))


def factorvae_votes(data: FactorCodes, n: int, batch_size: int, scale: Tensor, active: Tensor,
                    rng: np.random.Generator) -> np.ndarray:
    """n FactorVAE votes from ``data``: per vote a factor k (uniform), the class of k of a uniform row, and
    ``batch_size`` rows with that class; the vote is (k, the active dimension of least variance over the batch
    divided by ``scale``, its variance over all codes). Returns the counts (F, D) int64."""
    k = rng.integers(data.num_factors, size=n)
    value = data.classes[rng.integers(len(data.classes), size=n), k]
    rows = data.index.sample(np.repeat(k, batch_size), np.repeat(value, batch_size), rng).reshape(n, batch_size)
    local = _gather(data.codes, lambda z: z.var(1, correction=1), rows)
    ratio = torch.where(active, local / scale.clamp_min(1e-300), torch.full_like(local, math.inf))
    dim = ratio.argmin(1).cpu().numpy()
    d = data.codes.shape[1]
    return np.bincount(k * d + dim, minlength=data.num_factors * d).reshape(data.num_factors, d)


def factorvae_score(train: FactorCodes, test: FactorCodes, batch_size: int = 64, num_votes: int = 2000,
                    num_eval_votes: int = 1000, prune_threshold: float = 0.05, seed: int = 0) -> float:
    """The FactorVAE score: the majority vote (each dimension -> the factor it was most often the least-variance
    dimension for) over ``num_votes`` votes of the train codes, its accuracy on ``num_eval_votes`` votes of the test
    codes; variances are normalised by the train codes' (ddof 1). Dimensions with std under ``prune_threshold``
    are collapsed: they get no vote; none active scores 0. Departure: the winning dimension is indexed among all
    dimensions, where disentanglement_lib's argmin over the active ones is used as an index into all of them
    (which credits the wrong dimension once a collapsed one precedes an active one)."""
    var = train.codes.double().var(0, correction=1)
    active = var.sqrt() >= prune_threshold
    if not bool(active.any()):
        return 0.0
    rng = np.random.default_rng(seed)
    votes = factorvae_votes(train, num_votes, batch_size, var, active, rng)
    majority = votes.argmax(0)
    eval_votes = factorvae_votes(test, num_eval_votes, batch_size, var, active, rng)
    return float(eval_votes[majority, np.arange(votes.shape[1])].sum() / eval_votes.sum())


# --------------------------------------------------------------------------------------------------------------
# The registered measures: (train, test, cfg, seed) -> {key: value}, declared with the keys they log.


@DISENTANGLEMENT.register("mig", keys=("dis/mig",))
def mig(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0) -> dict[str, float]:
    """MIG (Chen et al. 2018): mutual information gap of the best two dimensions per factor, 0..1."""
    return {"dis/mig": mig_score(train.array, train.classes, cfg.num_bins)}


@DISENTANGLEMENT.register("sap", keys=("dis/sap",))
def sap(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0) -> dict[str, float]:
    """SAP (Kumar et al. 2018): accuracy gap of the best two single-dimension linear SVMs per factor, 0..1."""
    return {"dis/sap": sap_score(train.array, train.classes, test.array, test.classes, seed)}


@DISENTANGLEMENT.register("dci", keys=("dis/dci_disentanglement", "dis/dci_completeness", "dis/dci_informativeness"))
def dci(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018): disentanglement, completeness, informativeness by boosted trees, 0..1."""
    importance, _, test_acc = dci_importance(train.array, train.classes, test.array, test.classes, seed)
    return {"dis/dci_disentanglement": dci_disentanglement(importance),
            "dis/dci_completeness": dci_completeness(importance), "dis/dci_informativeness": test_acc}


@DISENTANGLEMENT.register("betavae", keys=("dis/betavae_score",))
def betavae(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0) -> dict[str, float]:
    """BetaVAE score (Higgins et al. 2017): which factor did two batches share, from |z1 - z2|; 1/F..1."""
    return {"dis/betavae_score": betavae_score(train, test, cfg.batch_size, cfg.num_votes, cfg.num_eval_votes, seed)}


@DISENTANGLEMENT.register("factorvae", keys=("dis/factorvae_score",))
def factorvae(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0) -> dict[str, float]:
    """FactorVAE score (Kim & Mnih 2018): majority vote of the least-variance dimension per fixed factor; 1/F..1."""
    return {"dis/factorvae_score": factorvae_score(train, test, cfg.batch_size, cfg.num_votes, cfg.num_eval_votes,
                                                   cfg.prune_threshold, seed)}


@DISENTANGLEMENT.register("modularity", keys=("dis/modularity",))
def modularity(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0) -> dict[str, float]:
    """Modularity (Ridgeway & Mozer 2018): does each dimension carry information about one factor only, 0..1."""
    return {"dis/modularity": modularity_score(train.array, train.classes, cfg.num_bins)}


@DISENTANGLEMENT.register("explicitness", keys=("dis/explicitness",))
def explicitness(train: FactorCodes, test: FactorCodes, cfg: DisentanglementConfig, seed: int = 0
                 ) -> dict[str, float]:
    """Explicitness (Ridgeway & Mozer 2018): test ROC-AUC of a logistic regression per factor, 0.5..1."""
    return {"dis/explicitness": explicitness_score(train.array, train.classes, test.array, test.classes)}


# --------------------------------------------------------------------------------------------------------------
# Entry points


def measure(train_codes: Tensor, train_factors: Tensor | np.ndarray, test_codes: Tensor,
            test_factors: Tensor | np.ndarray, names: Sequence[str], cfg: DisentanglementConfig | None = None,
            seed: int = 0, factor_names: Sequence[str] = ()) -> dict[str, float]:
    """The measures ``names`` on given codes (N, D) and factor values (N, F) of train and test images, and each one's
    time (``time/dis/<name>_s``). Factor values become classes (``factor_classes``). Codes that are not all finite
    (a diverged trial) give NaN for every key, with a warning."""
    cfg = cfg or DisentanglementConfig()
    values = [f.detach().cpu().numpy() if isinstance(f, Tensor) else np.asarray(f) for f in (train_factors, test_factors)]
    (train_y, test_y), kept = factor_classes(values, cfg.num_bins)
    kept_names = tuple(factor_names[j] for j in kept) if factor_names else ()
    train, test = FactorCodes(train_codes, train_y, kept_names), FactorCodes(test_codes, test_y, kept_names)
    finite = bool(torch.isfinite(train_codes).all() and torch.isfinite(test_codes).all())
    out: dict[str, float] = {}
    for name in names:
        fn = DISENTANGLEMENT.get(name)
        if not finite or not kept:
            _log.warning("disentanglement %s: %s", name, "codes are not finite" if not finite else "no factor varies")
            out.update(dict.fromkeys(DISENTANGLEMENT.meta(name)["keys"], math.nan))
            continue
        started = time.perf_counter()
        out.update(fn(train, test, cfg, seed))
        out[f"time/dis/{name}_s"] = time.perf_counter() - started
    return out


def disentanglement_metrics(model: nn.Module, dataset: Dataset, cfg: EvalConfig, seed: int = 0) -> dict[str, float]:
    """The measures ``cfg.disentanglement`` names (``dis/...``, ``time/dis/<name>_s``) for ``model`` on ``dataset``.

    Encodes ``num_train`` train-split and ``num_test`` test-split images (seeded draws without replacement,
    ``cfg.disentanglement_protocol``) once, in eval mode on the model's device, then runs ``measure``. Empty, with a
    warning, for a dataset without factors (the spec rejects that combination before a sweep starts).
    """
    if not cfg.disentanglement:
        return {}
    if dataset.train.factors is None or dataset.test.factors is None or not dataset.factor_names:
        _log.warning("%s has no generative factors: disentanglement measures skipped", dataset.name)
        return {}
    protocol = cfg.disentanglement_protocol
    train = dataset.train[subsample(len(dataset.train), protocol.num_train, seed).to(dataset.train.device)]
    test = dataset.test[subsample(len(dataset.test), protocol.num_test, seed + 1).to(dataset.test.device)]
    return measure(embed_split(model, train), train.factors, embed_split(model, test), test.factors,
                   cfg.disentanglement, protocol, seed, dataset.factor_names)
