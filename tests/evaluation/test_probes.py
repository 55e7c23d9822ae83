"""Tests of aesweep.evaluation.probes: every registered classifier separates separable embeddings and falls to chance on shuffled
labels; clusterers recover well-separated blobs; the torch fast paths agree with scikit-learn (on real Fashion-MNIST
features where the system copy exists); label-efficiency curves, the paper protocol and the online probe."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsClassifier

from aesweep.evaluation import clustering, probes, solvers
from aesweep.registry import CLUSTERERS, PROBES
from aesweep.spec.trial import EvalConfig

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
CLASSIFIERS = ["logreg", "mlp", "random_forest", "knn", "mlp_torch"]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def blobs(n_per_class: int, num_classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0):
    """Gaussian blobs (std ``spread``) around centres at radius 10 in random directions, ``n_per_class`` rows each:
    (x (N, dim) float32, y (N,) int64), rows shuffled."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    centers = 10 * centers / centers.norm(dim=1, keepdim=True)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centers[y] + spread * torch.randn(len(y), dim, generator=g)
    order = torch.randperm(len(y), generator=g)
    return x[order], y[order]


def split(n_train: int, n_test: int, **kw):
    """Blobs with about ``n_train`` / ``n_test`` rows per class: (train_x, train_y, test_x, test_y)."""
    x, y = blobs(n_train + n_test, **kw)
    cut = n_train * kw.get("num_classes", 4)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def cfg(**kw) -> EvalConfig:
    base = {"probes": [], "clustering": []}
    return EvalConfig(**{**base, **kw})


def test_registries_hold_the_published_probes():
    assert set(CLASSIFIERS) <= set(PROBES.names())
    assert {"kmeans", "gmm", "hdbscan"} <= set(CLUSTERERS.names())
    assert all(PROBES.doc(name) for name in CLASSIFIERS)


# --------------------------------------------------------------------------------------------------------------
# Classifiers on synthetic embeddings


@pytest.mark.parametrize("backend", ["auto", "sklearn"])
def test_every_classifier_separates_blobs_and_scores_are_consistent(backend):
    xtr, ytr, xte, yte = split(100, 100)
    out = probes.run_probes(xtr, ytr, xte, yte, cfg(probes=CLASSIFIERS, backend=backend), num_classes=4)
    counts = np.bincount(yte.numpy(), minlength=4)
    for name in CLASSIFIERS:
        acc = out[f"probe/{name}/acc"]
        assert acc >= 0.99, (name, acc)
        per_class = np.array([out[f"probe/{name}/acc/class_{k}"] for k in range(4)])
        # Accuracy is the count-weighted mean of the per-class accuracies; macro-F1 <= 1 and near acc here.
        assert np.isclose((per_class * counts).sum() / counts.sum(), acc)
        assert 0.98 <= out[f"probe/{name}/f1"] <= 1.0
        assert out[f"time/probe/{name}_s"] >= 0


def test_every_classifier_is_at_chance_on_shuffled_labels():
    xtr, ytr, xte, yte = split(150, 250)
    g = torch.Generator().manual_seed(1)
    ytr, yte = ytr[torch.randperm(len(ytr), generator=g)], yte[torch.randperm(len(yte), generator=g)]
    out = probes.run_probes(xtr, ytr, xte, yte, cfg(probes=CLASSIFIERS), num_classes=4)
    for name in CLASSIFIERS:  # chance 0.25; 1000 test rows give a std of 0.014
        assert abs(out[f"probe/{name}/acc"] - 0.25) < 0.07, (name, out[f"probe/{name}/acc"])


def test_scores_on_a_known_confusion():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    out = probes.classification_scores(y_true, y_pred, 4, "probe/x")
    assert out["probe/x/acc"] == 6 / 8
    assert out["probe/x/acc/class_0"] == 0.75 and out["probe/x/acc/class_1"] == 1.0
    assert out["probe/x/acc/class_2"] == 0.5 and "probe/x/acc/class_3" not in out  # absent from the test set
    f1 = np.mean([2 * 0.75 * 0.75 / 1.5, 2 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 / 1.5])
    assert np.isclose(out["probe/x/f1"], f1)


@pytest.mark.parametrize("preprocessing", list(probes.PREPROCESSINGS))
@pytest.mark.parametrize("backend", ["auto", "sklearn"])
def test_preprocessings_with_both_backends(preprocessing, backend):
    xtr, ytr, xte, yte = split(60, 60, dim=80)  # d > 50: PCA and SelectKBest really reduce
    for name in ("logreg", "knn"):
        pred = probes.fit_predict(name, xtr, ytr, xte, num_classes=4, preprocessing=preprocessing, backend=backend)
        assert pred.shape == yte.shape and np.mean(pred == yte.numpy()) >= 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_inputs_as_numpy_or_tensors_on_any_device_give_the_same_predictions(device):
    xtr, ytr, xte, yte = split(50, 50, spread=3.0)  # overlapping: predictions are not all trivially right
    for name in ("logreg", "knn"):
        ref = probes.fit_predict(name, xtr.numpy(), ytr.numpy(), xte.numpy(), num_classes=4)
        with torch.inference_mode():  # embeddings arrive as inference tensors from evaluation
            got = probes.fit_predict(name, xtr.to(device), ytr.to(device), xte.to(device), num_classes=4)
        assert np.mean(ref == got) >= 0.99


def test_run_probes_accepts_inference_tensors_outside_inference_mode():
    # evaluate() embeds under torch.inference_mode() and probes afterwards: in-place solver updates must still work.
    with torch.inference_mode():
        xtr, ytr, xte, yte = split(50, 50)
    out = probes.run_probes(xtr, ytr, xte, yte, cfg(probes=["logreg", "knn"], clustering=["kmeans"]), num_classes=4)
    assert out["probe/logreg/acc"] > 0.99 and out["probe/knn/acc"] > 0.99 and out["cluster/kmeans/ari"] > 0.99


def test_torch_knn_votes_exactly_like_sklearn_including_zero_distances():
    g = torch.Generator().manual_seed(0)
    xtr = torch.randn(300, 3, generator=g)
    xtr[250:270] = xtr[:20]  # duplicated training points, under other labels
    ytr = torch.randint(0, 5, (300,), generator=g)
    xte = torch.cat([xtr[:50], torch.randn(200, 3, generator=g)])  # 50 test points sit on training points
    ref = KNeighborsClassifier(n_neighbors=5, weights="distance").fit(xtr.double(), ytr).predict(xte.double())
    # A zero-distance neighbour decides alone (duplicates vote equally, ties to the smaller class), as in sklearn.
    assert np.array_equal(solvers.torch_knn(xtr, ytr, xte, 5).numpy(), ref)


def test_torch_logreg_solves_sklearns_objective():
    xtr, ytr, xte, _ = split(60, 20, spread=4.0, dim=8)
    xtr, xte = solvers.standardize(xtr, xte)
    for C in (0.1, 1.0):
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(xtr.double().numpy(), ytr.numpy())
        w, b = solvers.torch_logreg_fit(xtr, ytr, 4, C=C, max_iter=1000, tol=1e-7)
        # Converged on the same objective: the same coefficients, up to float32 precision.
        assert np.allclose(w.T.numpy(), ref.coef_, atol=2e-3), np.abs(w.T.numpy() - ref.coef_).max()
        assert np.allclose(b.numpy(), ref.intercept_, atol=2e-3)
        pred = solvers.torch_logreg(xtr, ytr, xte, 4, C=C)  # the default budget: scikit-learn's
        assert np.mean(pred.numpy() == ref.predict(xte.double().numpy())) >= 0.98


# --------------------------------------------------------------------------------------------------------------
# Clustering


@pytest.mark.parametrize("backend", ["auto", "sklearn"])
def test_clusterers_recover_separated_blobs(backend):
    x, y = blobs(150, num_classes=5, dim=8, spread=0.5)
    out = probes.run_probes(x[:10], y[:10], x, y, cfg(clustering=["kmeans", "gmm", "hdbscan"], backend=backend,
                                                      cluster_pca_dim=4), num_classes=5)
    for method in ("kmeans", "gmm", "hdbscan"):
        assert out[f"cluster/{method}/ari"] > 0.98, (method, out[f"cluster/{method}/ari"])
        assert out[f"cluster/{method}/nmi"] > 0.98
        assert out[f"cluster/{method}/n_clusters"] == 5
        assert out[f"time/cluster/{method}_s"] >= 0
    assert 0 <= out["cluster/hdbscan/noise_frac"] < 0.05


def test_hdbscan_counts_noise_and_scores_it_as_one_label():
    x, y = blobs(200, num_classes=3, dim=2, spread=0.3)
    g = torch.Generator().manual_seed(3)
    outliers = torch.rand(60, 2, generator=g) * 60 - 30  # scattered far from the blobs' dense cores
    x = torch.cat([x, outliers])
    y = torch.cat([y, torch.full((60,), 3)])  # the outliers' own class, so noise can be scored as a label
    out = probes.run_probes(x[:10], y[:10], x, y, cfg(clustering=["hdbscan"], cluster_pca_dim=None,
                                                      hdbscan_min_cluster_size=15), num_classes=4)
    assert out["cluster/hdbscan/n_clusters"] == 3  # noise is not a cluster
    assert 0.05 < out["cluster/hdbscan/noise_frac"] < 0.2
    assert out["cluster/hdbscan/ari"] > 0.9  # noise as its own label matches the outliers' class


def test_cluster_subsample_bounds_gmm_and_hdbscan_rows(monkeypatch):
    seen = {}

    def spy(method, inner):
        def fit_predict(x, k, config, seed):
            seen[method] = len(x)
            return inner(x, k, config, seed)
        return fit_predict

    for method in ("kmeans", "gmm"):
        row = CLUSTERERS.get(method)
        monkeypatch.setitem(CLUSTERERS._items, method, clustering.Clusterer(spy(method, row.fit_predict), row.bounded))
    x, y = blobs(100, num_classes=4, dim=4)
    probes.run_probes(x[:10], y[:10], x, y, cfg(clustering=["kmeans", "gmm"], cluster_subsample=120), num_classes=4)
    assert seen == {"kmeans": 400, "gmm": 120}


# --------------------------------------------------------------------------------------------------------------
# Row selection and label efficiency


def test_stratified_subset_keeps_class_shares_and_is_seeded():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    rows = probes.stratified_subset(y, 100, seed=0)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(y[rows]).tolist() == [50, 30, 20]
    assert np.array_equal(rows, probes.stratified_subset(y, 100, seed=0))
    assert not np.array_equal(rows, probes.stratified_subset(y, 100, seed=1))
    assert len(probes.stratified_subset(y, 101, seed=0)) == 101
    assert np.array_equal(probes.stratified_subset(y, None, seed=0), np.arange(1000))


def test_per_class_subsets_are_nested():
    y = np.repeat([0, 1, 2], [50, 30, 5])
    small, large = probes.per_class_subset(y, 3, seed=0), probes.per_class_subset(y, 10, seed=0)
    assert np.bincount(y[small]).tolist() == [3, 3, 3] and np.bincount(y[large]).tolist() == [10, 10, 5]
    assert set(small) <= set(large)


def test_label_efficiency_curve():
    xtr, ytr, xte, yte = split(200, 100, spread=6.0)  # overlapping blobs: more labels help
    out = probes.run_probes(xtr, ytr, xte, yte, cfg(probes=["logreg", "knn", "mlp"], label_efficiency=[1, 10, 50]),
                            num_classes=4)
    for name in ("logreg", "knn", "mlp"):
        assert out[f"probe/{name}/acc_at_all"] == out[f"probe/{name}/acc"]
        assert {f"probe/{name}/acc_at_{n}" for n in (1, 10, 50)} <= set(out)
        assert out[f"probe/{name}/acc_at_10"] <= out[f"probe/{name}/acc_at_all"] + 0.03
        assert out[f"probe/{name}/acc_at_1"] < out[f"probe/{name}/acc_at_all"] - 0.1  # one label per class: near chance
        assert out[f"time/probe/{name}/label_efficiency_s"] >= 0


def test_slow_probes_use_slow_subsample(monkeypatch):
    rows = {}
    real = probes.fit_predict

    def spy(name, train_x, *args, **kw):
        rows[name] = len(train_x)
        return real(name, train_x, *args, **kw)

    monkeypatch.setattr(probes, "fit_predict", spy)
    xtr, ytr, xte, yte = split(100, 20)
    probes.run_probes(xtr, ytr, xte, yte, cfg(probes=["knn", "random_forest"], subsample=200, slow_subsample=80),
                      num_classes=4)
    assert rows == {"knn": 200, "random_forest": 80}


# --------------------------------------------------------------------------------------------------------------
# Paper protocol and online probe


def test_paper_protocol_reports_cross_validation():
    xtr, ytr, xte, yte = split(30, 30, spread=4.0)
    out = probes.run_probes(xtr, ytr, xte, yte, cfg(probes=["logreg", "knn"], protocol="paper",
                                                    label_efficiency=[10]), num_classes=4)
    for name in ("logreg", "knn"):
        assert 0.5 < out[f"probe/{name}/cv_mean"] <= 1 and 0 <= out[f"probe/{name}/cv_std"] < 0.3
        assert 0.5 < out[f"probe/{name}/acc"] <= 1
        assert f"probe/{name}/acc_at_10" in out and f"probe/{name}/f1" in out
        # The study's choice of preprocessing is the best on test; the CV's choice can only score as well or less.
        assert 0 < out[f"probe/{name}/acc_cv_selected"] <= out[f"probe/{name}/acc"]


@pytest.mark.parametrize("device", DEVICES)
def test_online_probe(device):
    xtr, ytr, xte, yte = split(500, 500, num_classes=4, dim=64, spread=2.0)
    with torch.inference_mode():
        out = probes.online_probe(xtr.to(device), ytr.to(device), xte.to(device), yte.to(device))
    assert set(out) == {"val/probe/knn/acc", "val/probe/logreg/acc"}
    assert min(out.values()) > 0.95


# --------------------------------------------------------------------------------------------------------------
# Fast paths against scikit-learn on real Fashion-MNIST features


@pytest.fixture(scope="module")
def fashion_features():
    """5000 train / 2000 test Fashion-MNIST images, pixels in [0, 1] projected to d=32 and d=64 by a fixed seeded
    Gaussian random projection (as shared/baselines/naive_probes.py does)."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST} (Debian package dataset-fashion-mnist)")
    from aesweep.data.datasets import load_dataset
    from aesweep.spec.trial import DatasetConfig

    with tempfile.TemporaryDirectory() as root:  # the loader extracts the verified IDX files into its root
        ds = load_dataset(DatasetConfig(name="fashion_mnist", root=root, download=False, train_size=5000,
                                        test_size=2000, val_fraction=0.0))
    g = torch.Generator().manual_seed(0)
    out = {}
    for d in (32, 64):
        w = torch.randn(784, d, generator=g) / d ** 0.5
        out[d] = ((ds.train.images.flatten(1).float() / 255) @ w, ds.train.labels,
                  (ds.test.images.flatten(1).float() / 255) @ w, ds.test.labels)
    return out


@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("name", ["logreg", "knn"])
def test_torch_classifiers_match_sklearn_on_fashion_mnist(fashion_features, name, d):
    xtr, ytr, xte, yte = fashion_features[d]
    acc = {backend: np.mean(probes.fit_predict(name, xtr, ytr, xte, num_classes=10, backend=backend) == yte.numpy())
           for backend in ("auto", "sklearn")}
    assert acc["sklearn"] > 0.7  # real features, a real problem
    assert abs(acc["auto"] - acc["sklearn"]) <= 0.01, acc


def test_torch_kmeans_matches_sklearn_on_fashion_mnist(fashion_features):
    xtr, ytr, _, _ = fashion_features[32]
    y = ytr.numpy()
    # k-means on real features has local minima of near-equal inertia whose ARI differs by 0.01-0.03, for
    # scikit-learn as much as for us: compare the ARI averaged over seeds, and the best inertia reached.
    sk = [KMeans(10, n_init=10, random_state=s).fit(xtr.double().numpy()) for s in range(4)]
    ours = [solvers.torch_kmeans(xtr, 10, seed=s) for s in range(4)]
    sk_ari = np.mean([adjusted_rand_score(y, m.labels_) for m in sk])
    our_ari = np.mean([adjusted_rand_score(y, labels.numpy()) for labels, _ in ours])
    assert sk_ari > 0.2
    assert abs(our_ari - sk_ari) <= 0.01, (our_ari, sk_ari)
    assert min(inertia for _, inertia in ours) <= 1.002 * min(m.inertia_ for m in sk)


# --------------------------------------------------------------------------------------------------------------
# mlp_torch: the frozen-encoder neural classifier


def test_mlp_torch_is_within_a_few_points_of_scikit_learns_mlp():
    from sklearn.neural_network import MLPClassifier

    # Ten overlapping classes in 32 dimensions: separable enough for ~90%, hard enough that the two can differ.
    xtr, ytr, xte, yte = split(200, 200, num_classes=10, dim=32, spread=3.0)
    ours = probes.fit_predict("mlp_torch", xtr, ytr, xte, num_classes=10)
    xtr_s, xte_s = solvers.standardize(xtr, xte)
    reference = MLPClassifier(hidden_layer_sizes=(64,), early_stopping=True, random_state=0, max_iter=500)
    theirs = reference.fit(xtr_s.numpy(), ytr.numpy()).predict(xte_s.numpy())
    acc_ours, acc_theirs = float(np.mean(ours == yte.numpy())), float(np.mean(theirs == yte.numpy()))
    assert acc_theirs > 0.85 and abs(acc_ours - acc_theirs) < 0.03, (acc_ours, acc_theirs)
    # backend: sklearn runs the same fit through the scikit-learn wrapper (CPU, the same seed): same predictions.
    wrapped = probes.fit_predict("mlp_torch", xtr, ytr, xte, num_classes=10, backend="sklearn")
    assert float(np.mean(wrapped == yte.numpy())) == pytest.approx(acc_ours, abs=0.02)


def test_mlp_torch_early_stopping_restores_the_best_epoch():
    from aesweep.evaluation import mlp_probe

    # Noisy labels on few rows and a wide net without dropout: validation accuracy peaks, then overfitting sets in.
    xtr, ytr, _, _ = split(40, 1, num_classes=4, dim=16, spread=6.0)
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(len(ytr), generator=g) < 0.3
    noisy_y = torch.where(flip, torch.randint(0, 4, ytr.shape, generator=g), ytr)
    xtr, _ = solvers.standardize(xtr, xtr)
    before = torch.get_rng_state()
    fit = mlp_probe.fit_mlp(xtr, noisy_y, 4, widths=[256, 256], dropout=0.0, lr=1e-2, batch_size=16,
                            max_epochs=200, patience=8, val_fraction=0.25, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    acc = fit.val_acc
    assert len(acc) < 200 and len(acc) == fit.best_epoch + 8  # stopped 8 epochs after the best
    assert fit.best_epoch == int(np.argmax(acc)) + 1  # the first epoch of the best validation accuracy
    assert max(acc[fit.best_epoch:]) <= acc[fit.best_epoch - 1] and acc[-1] < acc[fit.best_epoch - 1]
    # The returned model is the best epoch's, not the last one's: it scores exactly that accuracy on the slice.
    held = torch.as_tensor(mlp_probe.validation_slice(noisy_y.numpy(), 0.25, 3))
    pred = mlp_probe.predict(fit.model, xtr[held])
    assert float((pred == noisy_y[held]).float().mean()) == pytest.approx(acc[fit.best_epoch - 1])
    # Same seed, same fit.
    again = mlp_probe.fit_mlp(xtr, noisy_y, 4, widths=[256, 256], dropout=0.0, lr=1e-2, batch_size=16,
                              max_epochs=200, patience=8, val_fraction=0.25, seed=3)
    assert again.val_acc == acc


def test_mlp_torch_reads_its_eval_fields_and_logs_like_the_other_probes(monkeypatch):
    from aesweep.evaluation import mlp_probe

    seen = []
    real_fit = mlp_probe.fit_mlp

    def recording_fit(*args, **kwargs):  # the real fit, with its arguments recorded
        seen.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(mlp_probe, "fit_mlp", recording_fit)
    xtr, ytr, xte, yte = split(60, 60)
    xval, yval = xte[:40], yte[:40]
    ev = cfg(probes=["mlp_torch"], probe_splits=True, label_efficiency=[5],
             mlp_torch={"widths": [32, 16], "dropout": 0.1, "batchnorm": True, "max_epochs": 30})
    out = probes.run_probes(xtr, ytr, xte, yte, ev, num_classes=4, seed=2, val_x=xval, val_y=yval)
    assert seen[0]["widths"] == [32, 16] and seen[0]["dropout"] == 0.1 and seen[0]["batchnorm"]
    assert seen[0]["max_epochs"] == 30 and seen[0]["seed"] == 2
    assert len(seen) == 2  # the probe, then its label-efficiency point (5 rows per class)
    for key in ("acc", "f1", "train_acc", "val_acc", "acc/class_0", "acc_at_5"):
        assert f"probe/mlp_torch/{key}" in out, key
    assert out["probe/mlp_torch/acc"] > 0.95 and out["probe/mlp_torch/val_acc"] > 0.95
    assert "mlp_torch" in PROBES and PROBES.doc("mlp_torch")
    with pytest.raises(ValueError):
        EvalConfig(mlp_torch={"dropout": 1.5})
    with pytest.raises(ValueError):
        EvalConfig(mlp_torch={"widths": [0]})


def test_mlp_torch_under_the_paper_protocol():
    # GridSearchCV clones the scikit-learn wrapper (get_params / set_params over its dropout grid).
    xtr, ytr, xte, yte = split(30, 30, spread=2.0)
    out, chosen = probes.paper_probe("mlp_torch", xtr, ytr, xte, yte, num_classes=4, n_jobs=1,
                                     cfg=cfg(mlp_torch={"lr": 1e-2, "widths": [32]}))
    assert 0.85 < out["probe/mlp_torch/acc"] <= 1 and 0.8 < out["probe/mlp_torch/cv_mean"] <= 1
    assert chosen[-1].widths == [32] and chosen[-1].dropout in (0.1, 0.3)  # the eval fields, then the grid
