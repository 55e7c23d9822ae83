"""Disentanglement measures: known answers on fixed codes, the published implementations as the reference, and a
tiny trial whose metrics hold every dis/ key.

Reference: disent 0.8.0 (MIG, SAP, DCI) and disentanglement_lib 1.5 (every measure) install from PyPI into a
scratch environment (disentanglement_lib with ``--no-deps`` and gin-config 0.5 standing in for ``gin.tf``:
tests/support/disentanglement_reference.py says how). ``REFERENCE`` below is what that script printed, run as
``/tmp/venv-disent/bin/python -m tests.support.disentanglement_reference`` on the cases of that module (a 3 x 4 x 5 x 6
factor grid, 1440 rows, float32 codes): the libraries' own functions on the same arrays (MIG, SAP, DCI with the
boosted trees' random_state pinned to 0 as ours, modularity, explicitness), and for BetaVAE / FactorVAE their full
protocols on a simulator of the same rows, means over 8 seeds where the score is not exactly 1. Keys ending in
``@disent`` are disent's values. Largest differences, ours vs reference over the five cases: MIG 1.1e-16, SAP 0,
DCI 3.3e-16, modularity 6.2e-15, explicitness 0 (disent and disentanglement_lib agree on every key disent has;
with the trees left unseeded, as the libraries run them, DCI moves by up to 4e-3 on the rotated and noise codes).
The sampled measures differ by their random draws only: BetaVAE by at most 0.004 and FactorVAE by at most 0.010
(8-seed means; the standard error of such a difference is about 0.01). Explicitness on the ``dead`` case has no
reference: the library divides the constant dimensions by their zero std.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from aesweep import registry
from aesweep.data import datasets
from aesweep.evaluation import disentanglement as dis
from aesweep.spec.load import parse_spec
from aesweep.spec.trial import DatasetConfig, DisentanglementConfig, EvalConfig
from aesweep.training.train import run_trial
from tests.support import disentanglement_reference as ref

EXACT = ("mig", "sap", "dci", "modularity", "explicitness")
SAMPLED = ("betavae", "factorvae")
CFG = DisentanglementConfig(num_bins=ref.NUM_BINS, batch_size=ref.BATCH_SIZE, num_votes=ref.NUM_POINTS,
                            num_eval_votes=ref.NUM_EVAL_POINTS, prune_threshold=ref.PRUNE_THRESHOLD)

# fmt: off
REFERENCE = {'identity': {'dis/mig': 0.9867785577060645,
              'dis/mig@disent': 0.9867785577060645,
              'dis/sap': 0.4319444444444444,
              'dis/sap@disent': 0.4319444444444444,
              'dis/dci_disentanglement': 0.9999999994301907,
              'dis/dci_disentanglement@disent': 0.9999999994301907,
              'dis/dci_completeness': 0.9999999994301907,
              'dis/dci_completeness@disent': 0.9999999994301907,
              'dis/dci_informativeness': 1.0,
              'dis/dci_informativeness@disent': 1.0,
              'dis/modularity': 0.9999038078705603,
              'dis/explicitness': 1.0,
              'dis/betavae_score': 1.0,
              'dis/factorvae_score': 1.0},
 'rotated': {'dis/mig': 0.04813317837372738,
             'dis/mig@disent': 0.04813317837372738,
             'dis/sap': 0.028472222222222246,
             'dis/sap@disent': 0.028472222222222246,
             'dis/dci_disentanglement': 0.18791658478141932,
             'dis/dci_disentanglement@disent': 0.18791658478141932,
             'dis/dci_completeness': 0.1920919378090088,
             'dis/dci_completeness@disent': 0.1920919378090088,
             'dis/dci_informativeness': 0.9805555555555556,
             'dis/dci_informativeness@disent': 0.9805555555555556,
             'dis/modularity': 0.7548104508253595,
             'dis/explicitness': 1.0,
             'dis/betavae_score': 0.9065000000000001,
             'dis/factorvae_score': 0.7288749999999999},
 'noise': {'dis/mig': 0.0010571307554101657,
           'dis/mig@disent': 0.0010571307554101657,
           'dis/sap': 0.018055555555555547,
           'dis/sap@disent': 0.018055555555555547,
           'dis/dci_disentanglement': 0.0017450082647805217,
           'dis/dci_disentanglement@disent': 0.0017450082647805217,
           'dis/dci_completeness': 0.002536314920240035,
           'dis/dci_completeness@disent': 0.002536314920240035,
           'dis/dci_informativeness': 0.23888888888888887,
           'dis/dci_informativeness@disent': 0.23888888888888887,
           'dis/modularity': 0.5201433362907726,
           'dis/explicitness': 0.5074266010802468,
           'dis/betavae_score': 0.257,
           'dis/factorvae_score': 0.26187499999999997},
 'duplicated': {'dis/mig': 0.7395405809204396,
                'dis/mig@disent': 0.7395405809204396,
                'dis/sap': 0.2652777777777777,
                'dis/sap@disent': 0.2652777777777777,
                'dis/dci_disentanglement': 0.999999999295863,
                'dis/dci_disentanglement@disent': 0.999999999295863,
                'dis/dci_completeness': 0.9007831536444452,
                'dis/dci_completeness@disent': 0.9007831536444452,
                'dis/dci_informativeness': 1.0,
                'dis/dci_informativeness@disent': 1.0,
                'dis/modularity': 0.9998747814569506,
                'dis/explicitness': 1.0,
                'dis/betavae_score': 1.0,
                'dis/factorvae_score': 1.0},
 'dead': {'dis/mig': 0.9867785577060645,
          'dis/mig@disent': 0.9867785577060645,
          'dis/sap': 0.4319444444444444,
          'dis/sap@disent': 0.4319444444444444,
          'dis/dci_disentanglement': 0.999999999430184,
          'dis/dci_disentanglement@disent': 0.999999999430184,
          'dis/dci_completeness': 0.9999999992652466,
          'dis/dci_completeness@disent': 0.9999999992652466,
          'dis/dci_informativeness': 1.0,
          'dis/dci_informativeness@disent': 1.0,
          'dis/modularity': 0.6666025385803735,
          'dis/betavae_score': 1.0,
          'dis/factorvae_score': 1.0}}
# fmt: on


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    return ref.fixed_cases()


@pytest.fixture(scope="module")
def classes() -> np.ndarray:
    return ref.grid_classes()


@pytest.fixture(scope="module")
def ours(cases, classes) -> dict[str, dict[str, float]]:
    """Every measure on every case: the exact ones fitted on the train rows and scored on the test rows; the sampled
    ones drawing from all rows (the reference's simulator samples all of them), one seed."""
    y_train, y_test = ref.split(classes)
    out = {}
    for name, codes in cases.items():
        z = torch.from_numpy(codes)
        z_train, z_test = ref.split(z)
        out[name] = {**dis.measure(z_train, y_train, z_test, y_test, EXACT, CFG),
                     **dis.measure(z, classes, z, classes, SAMPLED, CFG)}
    return out


# --------------------------------------------------------------------------------------------------------------
# Known answers


def test_a_code_equal_to_the_factors_scores_near_the_maxima(ours):
    got = ours["identity"]
    # MIG < 1 only because 20 bins merge some of the 6 values of a factor's code with its noise.
    assert got["dis/mig"] > 0.98
    assert got["dis/dci_disentanglement"] > 0.999 and got["dis/dci_completeness"] > 0.999
    assert got["dis/dci_informativeness"] == 1.0 and got["dis/explicitness"] == 1.0
    assert got["dis/betavae_score"] == 1.0 and got["dis/factorvae_score"] == 1.0
    assert got["dis/modularity"] > 0.999
    # Discrete SAP's maximum is below 1: a linear SVM on one dimension separates only the end classes of a
    # many-valued factor well, and the second-best dimension is at chance, not 0. It is the largest of the cases.
    assert got["dis/sap"] == max(case["dis/sap"] for case in ours.values()) and got["dis/sap"] > 0.4


def test_a_rotated_code_loses_disentanglement_but_keeps_its_information(ours):
    got, identity = ours["rotated"], ours["identity"]
    assert got["dis/mig"] < 0.1 and got["dis/sap"] < 0.05
    assert got["dis/dci_disentanglement"] < 0.3 and got["dis/dci_completeness"] < 0.3
    assert got["dis/modularity"] < identity["dis/modularity"] - 0.2
    assert got["dis/factorvae_score"] < 0.8
    # A rotation loses nothing: the factors are as predictable from the whole code.
    assert got["dis/explicitness"] > 0.99 and got["dis/dci_informativeness"] > 0.95


def test_a_code_of_noise_scores_chance(ours, classes):
    got = ours["noise"]
    chance_accuracy = np.mean([1 / k for k in ref.SIZES])  # the trees' best guess per factor, balanced grid
    assert got["dis/mig"] < 0.01 and got["dis/sap"] < 0.05
    assert got["dis/dci_disentanglement"] < 0.05 and got["dis/dci_completeness"] < 0.05
    assert abs(got["dis/dci_informativeness"] - chance_accuracy) < 0.03
    assert abs(got["dis/explicitness"] - 0.5) < 0.03
    assert abs(got["dis/betavae_score"] - 1 / 4) < 0.05 and abs(got["dis/factorvae_score"] - 1 / 4) < 0.05
    # Modularity judges only how a dimension's information is spread over the factors, however little there is:
    # the plug-in MI of noise is larger for factors with more classes, so noise is not near 0 (0.52 here).
    assert 0.3 < got["dis/modularity"] < 0.8


def test_a_duplicated_dimension_costs_mig_sap_and_completeness_only(ours):
    got, identity = ours["duplicated"], ours["identity"]
    # The duplicated factor's gap is ~0: MIG loses its quarter; SAP its share; completeness halves its importance.
    assert got["dis/mig"] == pytest.approx(identity["dis/mig"] * 3 / 4, abs=0.01)
    assert got["dis/sap"] < identity["dis/sap"] * 3 / 4 + 0.01
    assert got["dis/dci_completeness"] < 0.95
    # Each dimension still serves one factor: disentanglement, modularity and the interventional scores stay.
    assert got["dis/dci_disentanglement"] > 0.999 and got["dis/modularity"] > 0.999
    assert got["dis/betavae_score"] == 1.0 and got["dis/factorvae_score"] == 1.0


def test_dead_dimensions_change_nothing_but_modularity(ours):
    got, identity = ours["dead"], ours["identity"]
    for key in ("dis/mig", "dis/sap", "dis/dci_disentanglement", "dis/dci_completeness", "dis/dci_informativeness",
                "dis/explicitness", "dis/betavae_score", "dis/factorvae_score"):
        assert got[key] == pytest.approx(identity[key], abs=1e-9), key
    # disentanglement_lib scores a dimension with no information 0: 2 dead of 6 take a third off.
    assert got["dis/modularity"] == pytest.approx(identity["dis/modularity"] * 4 / 6, abs=1e-9)


def test_factorvae_credits_the_right_dimension_after_a_collapsed_one(cases, classes):
    # disentanglement_lib indexes the argmin over the active dimensions into all of them: with a collapsed
    # dimension first, every vote would go to its left neighbour. Here the dead dimension comes first.
    codes = np.concatenate([np.zeros((len(classes), 1), np.float32), cases["identity"]], 1)
    data = dis.FactorCodes(torch.from_numpy(codes), classes)
    assert dis.factorvae_score(data, data, 64, 500, 300, 0.05, seed=0) == 1.0
    votes = dis.factorvae_votes(data, 400, 64, data.codes.double().var(0), torch.tensor([False, True, True, True,
                                                                                          True]), np.random.default_rng(0))
    assert votes[:, 0].sum() == 0 and (votes.argmax(1) == np.arange(1, 5)).all()


# --------------------------------------------------------------------------------------------------------------
# Against the published implementations


@pytest.mark.parametrize("case", list(REFERENCE))
def test_exact_measures_equal_disentanglement_lib_and_disent(ours, case):
    for key, value in REFERENCE[case].items():
        name = key.removesuffix("@disent")
        if name in ("dis/betavae_score", "dis/factorvae_score"):
            continue
        assert ours[case][name] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("case", ref.SAMPLED_CASES)
def test_sampled_measures_match_disentanglement_lib_within_their_sampling_noise(cases, classes, case):
    data = dis.FactorCodes(torch.from_numpy(cases[case]), classes)
    betavae = np.mean([dis.betavae_score(data, data, ref.BATCH_SIZE, ref.NUM_POINTS, ref.NUM_EVAL_POINTS, seed)
                       for seed in ref.SAMPLED_SEEDS])
    factorvae = np.mean([dis.factorvae_score(data, data, ref.BATCH_SIZE, ref.NUM_POINTS, ref.NUM_EVAL_POINTS,
                                             ref.PRUNE_THRESHOLD, seed) for seed in ref.SAMPLED_SEEDS])
    # Standard error of the difference of two 8-seed means: about 0.01 (the seeds' spread, 0.01-0.026).
    assert betavae == pytest.approx(REFERENCE[case]["dis/betavae_score"], abs=0.03)
    assert factorvae == pytest.approx(REFERENCE[case]["dis/factorvae_score"], abs=0.03)


def test_mutual_information_and_discretisation_match_the_explicit_formulas():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 7, (500, 3)), rng.integers(0, 5, (500, 4))
    b[:, 0] = a[:, 0] % 5  # one dependent pair
    want = np.array([[mutual_info_score(b[:, f], a[:, d]) for f in range(4)] for d in range(3)])
    np.testing.assert_allclose(dis.mutual_information(a, b), want, atol=1e-12)
    np.testing.assert_allclose(dis.entropy(b), [mutual_info_score(col, col) for col in b.T], atol=1e-12)
    x = rng.standard_normal((300, 3)).astype(np.float32).astype(np.float64)
    x[:, 2] = 1.5  # constant: one bin
    want = np.stack([np.digitize(col, np.histogram(col, 20)[1][:-1]) - 1 for col in x.T], 1)
    np.testing.assert_array_equal(dis.histogram_discretize(x, 20), want)
    assert dis.histogram_discretize(x, 20).max() == 19 and len(np.unique(dis.histogram_discretize(x, 20)[:, 2])) == 1


def test_mig_is_the_published_formula():
    # Chen et al. (2018), eq. 7, with plug-in mutual information of the 20-bin codes, computed here pair by pair.
    rng = np.random.default_rng(4)
    y = rng.integers(0, 6, (800, 3))
    z = y + 0.3 * rng.standard_normal(y.shape)
    z = np.concatenate([z, z[:, :1] + 0.5 * rng.standard_normal((800, 1))], 1)
    bins = [np.digitize(col, np.histogram(col, 20)[1][:-1]) for col in z.T]
    gaps = []
    for f in range(3):
        mi = sorted((mutual_info_score(y[:, f], col) for col in bins), reverse=True)
        gaps.append((mi[0] - mi[1]) / mutual_info_score(y[:, f], y[:, f]))
    assert dis.mig_score(z, y, 20) == pytest.approx(np.mean(gaps), abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Parts


def test_the_index_draws_rows_that_hold_the_class_asked_for(classes):
    index = dis.FactorIndex(classes)
    rng = np.random.default_rng(0)
    factor = rng.integers(0, 4, 5000)
    value = classes[rng.integers(0, len(classes), 5000), factor]
    rows = index.sample(factor, value, rng)
    assert (classes[rows, factor] == value).all()
    # Uniform among the rows that qualify: factor 0 = class 1 holds 480 rows, each drawn ~1/480 of the time.
    hits = np.bincount(index.sample(np.zeros(48_000, int), np.ones(48_000, int), rng), minlength=len(classes))
    assert (hits[classes[:, 0] != 1] == 0).all() and hits[classes[:, 0] == 1].min() > 50


def test_factor_values_become_one_mapping_of_classes_for_train_and_test():
    train = np.array([[0.0, 5.0, 0.1], [0.5, 5.0, 0.2], [1.0, 5.0, 0.3]])
    test = np.array([[1.0, 5.0, 0.9], [0.0, 5.0, 0.1]])  # a value train lacks
    (train_y, test_y), kept = dis.factor_classes([train, test])
    assert kept == [0, 2]  # the constant factor is dropped
    np.testing.assert_array_equal(train_y, [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(test_y, [[2, 3], [0, 0]])
    # More values than GRID_MAX_VALUES: a continuous factor, cut into num_bins equal-width bins.
    continuous = np.linspace(0, 1, 1000)[:, None]
    (y,), _ = dis.factor_classes([continuous], num_bins=20)
    assert y.max() == 19 and np.bincount(y[:, 0]).min() >= 49


def test_each_measure_logs_its_declared_keys_is_seeded_and_times_itself(cases, classes):
    z = torch.from_numpy(cases["rotated"])
    names = list(registry.declared(registry.DISENTANGLEMENT))
    cfg = DisentanglementConfig(num_votes=300, num_eval_votes=200)
    small = slice(0, 400)  # rows 0..399: every class of every factor occurs
    first = dis.measure(z[small], classes[small], z[small], classes[small], names, cfg, seed=1)
    for name in names:
        keys = registry.declared(registry.DISENTANGLEMENT)[name]["keys"]
        assert all(math.isfinite(first[k]) and 0 <= first[k] <= 1 for k in keys), name
        assert first[f"time/dis/{name}_s"] >= 0
    assert set(first) == {k for n in names for k in registry.meta(registry.DISENTANGLEMENT, n)["keys"]} | \
        {f"time/dis/{n}_s" for n in names}
    again = dis.measure(z[small], classes[small], z[small], classes[small], names, cfg, seed=1)
    assert {k: v for k, v in again.items() if not k.startswith("time/")} == \
        {k: v for k, v in first.items() if not k.startswith("time/")}


def test_gathered_blocks_do_not_change_the_scores(cases, classes, monkeypatch):
    data = dis.FactorCodes(torch.from_numpy(cases["rotated"]), classes)
    whole = (dis.betavae_score(data, data, 64, 300, 200, 5), dis.factorvae_score(data, data, 64, 300, 200, 0.05, 5))
    monkeypatch.setattr(dis, "CHUNK_ELEMS", 1000)  # a few points per block
    assert (dis.betavae_score(data, data, 64, 300, 200, 5),
            dis.factorvae_score(data, data, 64, 300, 200, 0.05, 5)) == whole


def test_codes_that_are_not_finite_give_nan_for_every_key(cases, classes):
    z = torch.from_numpy(cases["identity"]).clone()
    z[3, 1] = math.nan
    out = dis.measure(z, classes, z, classes, ["mig", "dci"], CFG)
    assert set(out) == {"dis/mig", "dis/dci_disentanglement", "dis/dci_completeness", "dis/dci_informativeness"}
    assert all(math.isnan(v) for v in out.values())


def test_datasets_with_factors_are_declared_so():
    declared = registry.declared(registry.DATASETS)
    assert [n for n, m in declared.items() if m.get("factors")] == ["shapes", "dsprites"]


def test_a_dataset_without_factors_is_skipped_with_a_warning(caplog):
    ds = datasets.load_dataset(DatasetConfig(name="shapes", train_size=60, test_size=20))
    bare = datasets.Dataset(ds.name, ds.train, ds.val, ds.test, ds.class_names, ds.flip_ok)  # no factor names
    with caplog.at_level("WARNING"):
        assert dis.disentanglement_metrics(torch.nn.Identity(), bare, EvalConfig(disentanglement=["mig"])) == {}
    assert "no generative factors" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# End to end


def test_a_tiny_shapes_trial_logs_every_measure(tmp_path):
    names = list(registry.declared(registry.DISENTANGLEMENT))
    spec = parse_spec(
        "name: tiny\n"
        "dataset: {name: shapes, train_size: 480, test_size: 128, val_fraction: 0.2}\n"
        "model: {backbone: conv, width: 0.125, latent_dim: 6}\n"
        "objective: {variant: vae, beta: 1.0}\n"
        "train: {epochs: 2, batch_size: 32, lr: 3.0e-3}\n"
        f"eval: {{metrics: [mse], probes: [], clustering: [], figures: [], disentanglement: [{', '.join(names)}],\n"
        "       disentanglement_protocol: {num_train: 300, num_test: 100, num_votes: 300, num_eval_votes: 200}}\n")
    result = run_trial(spec.resolve(), workdir=tmp_path)
    assert result.status == "finished", result.reason
    metrics = result.metrics
    for name in names:
        for key in registry.declared(registry.DISENTANGLEMENT)[name]["keys"]:
            assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 1, (key, metrics.get(key))
    assert metrics["dis/explicitness"] >= 0.5 - 0.1  # an AUC: chance is 0.5
    assert metrics["time/eval/disentanglement_s"] >= sum(metrics[f"time/dis/{n}_s"] for n in names)


def test_the_online_measure_reports_validation_mig_every_epoch_beside_the_probes(tmp_path):
    """eval.online_disentanglement: val/dis/mig and val/dis/modularity at every epoch the online probe runs (train
    and validation codes), beside the probes; the final dis/mig (test codes) is still measured at the end."""
    spec = parse_spec(
        "name: tiny\n"
        "dataset: {name: shapes, train_size: 480, test_size: 128, val_fraction: 0.2}\n"
        "model: {backbone: conv, width: 0.125, latent_dim: 6}\n"
        "objective: {variant: vae, beta: 4.0}\n"
        "train: {epochs: 2, batch_size: 32, lr: 3.0e-3}\n"
        "eval: {metrics: [mse], probes: [], clustering: [], figures: [], disentanglement: [mig],\n"
        "       online_disentanglement: [mig, modularity], online_probe_every: 1, online_probe_size: 90}\n")
    epochs: list[dict] = []
    result = run_trial(spec.resolve(), lambda m, e, c: epochs.append(m), workdir=tmp_path)
    assert result.status == "finished", result.reason
    for metrics in epochs:
        assert 0 <= metrics["val/dis/mig"] <= 1 and 0 <= metrics["val/dis/modularity"] <= 1
        assert 0 <= metrics["val/probe/knn/acc"] <= 1  # the online probe itself still runs
    assert 0 <= result.metrics["dis/mig"] <= 1
