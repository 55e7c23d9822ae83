"""Baselines fitted instead of trained (pca, raw_pixels): the numbers scikit-learn gives on the same split."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA
from sklearn.linear_model import LogisticRegression

from aesweep.data import batches, datasets
from aesweep.registry import UnknownNameError
from aesweep.spec import variants
from aesweep.spec.load import parse_spec
from aesweep.spec.trial import DatasetConfig
from aesweep.training.train import evaluate_stored, run_trial


@pytest.fixture(scope="module")
def shapes():
    return datasets.load_dataset(DatasetConfig(name="shapes", train_size=600, test_size=200, val_fraction=0.2))


def trial(variant: str, latent: int = 8, **eval_fields):
    ev = {"metrics": ["mse", "psnr", "ssim"], "probes": ["logreg"], "clustering": ["kmeans"], "figures": [],
          **eval_fields}
    spec = parse_spec(
        "name: base\ndataset: {name: shapes, train_size: 600, test_size: 200, val_fraction: 0.2}\n"
        f"model: {{backbone: conv, width: 0.125, latent_dim: {latent}}}\n"
        f"objective: {{variant: {variant}}}\ntrain: {{epochs: 3, batch_size: 64}}\n"
    )
    cfg = spec.resolve()
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update=ev)})


def _pixels(split: datasets.Split) -> np.ndarray:
    return batches.to_float(split.images).flatten(1).double().numpy()


@pytest.mark.parametrize("latent", [4, 16])
def test_pca_test_mse_equals_scikit_learn_pca_on_the_same_split(latent, shapes, tmp_path):
    reports = []
    result = run_trial(trial("pca", latent), lambda m, e, c: reports.append((m, e, c)), dataset=shapes,
                       workdir=tmp_path)
    assert result.status == "finished" and result.epochs == 1
    assert len(reports) == 1 and reports[0][1] == 1 and reports[0][2] is None  # one report, nothing to resume

    train, test = _pixels(shapes.train), _pixels(shapes.test)
    sk = SkPCA(n_components=latent, svd_solver="full").fit(train)
    # The baseline's x_hat is clipped to [0, 1] (the range every metric assumes); clipping never moves a
    # reconstruction away from an image in [0, 1], and here it must agree with scikit-learn's to float precision.
    recon = np.clip(sk.inverse_transform(sk.transform(test)), 0, 1)
    assert result.metrics["test/mse"] == pytest.approx(((recon - test) ** 2).mean(), rel=1e-4)
    unclipped = ((sk.inverse_transform(sk.transform(test)) - test) ** 2).mean()
    assert result.metrics["test/mse"] <= unclipped + 1e-9
    val = _pixels(shapes.val)
    val_recon = np.clip(sk.inverse_transform(sk.transform(val)), 0, 1)
    assert result.metrics["val/loss"] == pytest.approx(((val_recon - val) ** 2).mean(), rel=1e-4)
    # Parameter counts as the trained rows log them: mean (784) + components (784 x latent) + their variances.
    assert result.metrics["model/params"] == 784 + 784 * latent + latent
    for key in ("test/psnr", "test/ssim", "probe/logreg/acc", "cluster/kmeans/nmi", "time/fit_s"):
        assert np.isfinite(result.metrics[key]), key
    # More components reconstruct better: the baseline is the subspace, not a fixed projection.
    if latent == 16:
        assert result.metrics["test/mse"] < run_trial(trial("pca", 4), dataset=shapes).metrics["test/mse"]


def test_pca_code_spans_scikit_learns_subspace(shapes):
    from aesweep.evaluation.baselines import PCA

    model = PCA((1, 28, 28), 6).fit(shapes.train)
    sk = SkPCA(n_components=6, svd_solver="full").fit(_pixels(shapes.train))
    ours = model.components.double().numpy()
    # Same subspace: projecting scikit-learn's components onto ours loses nothing (signs may differ).
    overlap = np.linalg.norm(sk.components_ @ ours, axis=1)
    assert np.allclose(overlap, 1.0, atol=1e-4)
    assert np.allclose(model.explained_variance.numpy(), sk.explained_variance_, rtol=1e-3)


def test_raw_pixels_probes_the_pixels_and_reports_no_reconstruction(shapes, tmp_path):
    result = run_trial(trial("raw_pixels", figures=["latent_pca", "reconstructions"]), dataset=shapes,
                       workdir=tmp_path)
    assert result.status == "finished"
    assert not any(k.startswith("test/") or k.endswith("/loss") for k in result.metrics)
    # The probe is a logistic regression on the 784 pixels, the same as scikit-learn's on the same rows.
    sk = LogisticRegression(max_iter=2000).fit(_pixels(shapes.train), shapes.train.labels.numpy())
    ours = result.metrics["probe/logreg/acc"]
    assert abs(ours - sk.score(_pixels(shapes.test), shapes.test.labels.numpy())) <= 0.05
    # Figures that decode are skipped (a raw-pixel "reconstruction" is the image itself); the others are drawn.
    names = {p.name for p in result.artifacts}
    assert "latent_pca.png" in names and "reconstructions.png" not in names


def test_a_baselines_loss_is_the_trials_reconstruction_term(shapes, tmp_path):
    """val/loss of a BCE sweep's PCA row is its BCE, comparable with the trained rows' val/loss."""
    cfg = trial("pca", 8, metrics=["mse", "bce"])
    bce = run_trial(cfg.model_copy(update={"objective": cfg.objective.model_copy(update={"recon": "bce"})}),
                    dataset=shapes).metrics
    assert bce["test/loss"] == pytest.approx(bce["test/bce"]) and bce["test/loss"] != bce["test/mse"]
    reported = trial("pca", 8, metrics=["mse", "mae"])
    both = reported.objective.model_copy(update={"recon": "mse+mae", "mae_weight": 0.5})
    mixed = run_trial(reported.model_copy(update={"objective": both}), dataset=shapes).metrics
    assert mixed["test/loss"] == pytest.approx(mixed["test/mse"] + 0.5 * mixed["test/mae"])
    # Measured for the loss, reported only where eval.metrics asks: the BCE run did not list mae.
    assert "test/mae" not in bce


def test_a_stored_pca_trial_re_evaluates_to_the_same_numbers(shapes, tmp_path):
    cfg = trial("pca", 8)
    first = run_trial(cfg, dataset=shapes, workdir=tmp_path)
    again, _ = evaluate_stored(cfg, tmp_path, dataset=shapes)
    assert again["test/mse"] == pytest.approx(first.metrics["test/mse"], rel=1e-6)
    assert again["probe/logreg/acc"] == pytest.approx(first.metrics["probe/logreg/acc"])


def test_a_baseline_does_not_compose():
    with pytest.raises(UnknownNameError, match="baseline"):
        variants.parts("pca+vae")
    assert variants.compose("pca", {}).fit == "pca" and variants.compose("ae", {}).fit is None
