"""Fixed codes with known factors for the disentanglement tests, and the script that computes the reference values
the tests hold (tests/evaluation/test_disentanglement.py, ``REFERENCE``) with the published implementations.

The cases: a full factorial grid of 4 factors (3 x 4 x 5 x 6 = 360 combinations), each combination 4 times (1440
rows; replicas 0-2 are the train codes, replica 3 the test codes), and codes of it in float32:

- ``identity``: the standardised factors plus N(0, 0.05^2) noise (so replicas differ);
- ``rotated``: ``identity`` times a fixed random orthogonal 4 x 4 matrix;
- ``noise``: N(0, 1) in 4 dimensions, independent of the factors;
- ``duplicated``: ``identity`` and a copy of its first dimension (plus its own 0.05 noise): 5 dimensions;
- ``dead``: ``identity`` and two constant dimensions at the end (after the live ones, so that
  disentanglement_lib's FactorVAE, which indexes the winning dimension among the active ones, still credits the
  right one).

Regenerate the numbers (prints ``REFERENCE = {...}`` to paste into the test) in a scratch environment that has the
two reference libraries next to this project's numpy / scikit-learn / torch::

    python3 -m venv /tmp/venv-disent
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/venv-disent/lib/python3.11/site-packages/main.pth
    /tmp/venv-disent/bin/pip install disent==0.8.0 absl-py
    /tmp/venv-disent/bin/pip install --no-deps disentanglement-lib==1.5 gin-config==0.5.0
    /tmp/venv-disent/bin/python -m tests.support.disentanglement_reference   # from the repository root

disentanglement_lib 1.5 needs TensorFlow only for ``gin.tf``'s decorators, and gin-config 0.5 renamed the
``blacklist`` argument to ``denylist``: ``_import_disentanglement_lib`` stands ``gin`` in for ``gin.tf`` with that
rename; nothing of the metrics' code changes. Exact measures (MIG, SAP, DCI, modularity, explicitness) get the
same arrays as ours; the sampled ones (BetaVAE, FactorVAE) get a ground-truth simulator over the same 1440 rows
(``GridData``: sampling factors uniformly and then a row holding them is sampling a row uniformly), so theirs and
ours differ by their own random draws only.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import numpy as np

SIZES = (3, 4, 5, 6)
REPLICAS = 4
NUM_BINS = 20
SEED = 0
# The sampled protocols' sizes in the reference run and in the test (disentanglement_lib's defaults / 5).
BATCH_SIZE, NUM_POINTS, NUM_EVAL_POINTS, PRUNE_THRESHOLD = 64, 2000, 1000, 0.05
# BetaVAE / FactorVAE draw their batches at random, theirs and ours from different generators: on the cases whose
# score is not exactly 1 the reference is the mean over these seeds (and so is ours in the test).
SAMPLED_SEEDS = tuple(range(8))
SAMPLED_CASES = ("rotated", "noise")


def grid_classes() -> np.ndarray:
    """(1440, 4) int64: every combination of SIZES (row-major), REPLICAS times over."""
    grid = np.stack(np.unravel_index(np.arange(int(np.prod(SIZES))), SIZES), axis=1)
    return np.tile(grid, (REPLICAS, 1)).astype(np.int64)


def fixed_cases() -> dict[str, np.ndarray]:
    """The cases of the module docstring: name -> float32 codes (1440, D), rows aligned with ``grid_classes``."""
    rng = np.random.default_rng(SEED)
    y = grid_classes().astype(np.float64)
    identity = (y - y.mean(0)) / y.std(0) + 0.05 * rng.standard_normal(y.shape)
    rotation, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    noise = rng.standard_normal(y.shape)
    duplicate = identity[:, :1] + 0.05 * rng.standard_normal((len(y), 1))
    cases = {
        "identity": identity,
        "rotated": identity @ rotation,
        "noise": noise,
        "duplicated": np.concatenate([identity, duplicate], 1),
        "dead": np.concatenate([identity, np.zeros((len(y), 2))], 1),
    }
    return {name: codes.astype(np.float32) for name, codes in cases.items()}


def split(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The train rows (replicas 0..REPLICAS-2) and the test rows (the last replica)."""
    cut = (REPLICAS - 1) * int(np.prod(SIZES))
    return array[:cut], array[cut:]


class GridData:
    """disentanglement_lib's GroundTruthData over the fixed rows: an observation is a row index, and
    ``representation_function`` looks its code up."""

    def __init__(self, classes: np.ndarray):
        self.classes = classes
        self.rows = {}
        for i, row in enumerate(map(tuple, classes)):
            self.rows.setdefault(row, []).append(i)

    @property
    def num_factors(self) -> int:
        return self.classes.shape[1]

    @property
    def factors_num_values(self) -> list[int]:
        return list(SIZES)

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return np.stack([random_state.randint(k, size=num) for k in SIZES], axis=1)

    def sample_observations_from_factors(self, factors: np.ndarray, random_state: np.random.RandomState
                                         ) -> np.ndarray:
        return np.array([self.rows[tuple(f)][random_state.randint(REPLICAS)] for f in factors])

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return self.sample_observations_from_factors(self.sample_factors(num, random_state), random_state)

    def sample(self, num: int, random_state: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)


def _import_disentanglement_lib():
    import sys

    import gin

    configurable = gin.configurable

    def renamed(*args, blacklist=None, **kwargs):  # gin-config >= 0.4 calls it denylist
        return configurable(*args, denylist=blacklist, **kwargs) if blacklist is not None else \
            configurable(*args, **kwargs)

    gin.configurable = renamed
    gin.tf = gin
    sys.modules["gin.tf"] = gin
    from disentanglement_lib.evaluation.metrics import (
        beta_vae,
        dci,
        factor_vae,
        mig,
        modularity_explicitness,
        sap_score,
        utils,
    )

    gin.bind_parameter("discretizer.discretizer_fn", utils._histogram_discretize)
    gin.bind_parameter("discretizer.num_bins", NUM_BINS)
    gin.bind_parameter("prune_dims.threshold", PRUNE_THRESHOLD)
    return beta_vae, dci, factor_vae, mig, modularity_explicitness, sap_score, utils


@contextmanager
def _seeded_trees():
    """Both libraries build ``GradientBoostingClassifier()`` with random_state unset (NumPy's global generator); in
    this block it is ``random_state=SEED`` (ours), so that the trees break ties alike. disentanglement_lib calls
    ``ensemble.GradientBoostingClassifier`` on the module and disent imports the name when it runs: patching the
    module attribute reaches both."""
    import sklearn.ensemble

    plain = sklearn.ensemble.GradientBoostingClassifier
    sklearn.ensemble.GradientBoostingClassifier = partial(plain, random_state=SEED)
    try:
        yield
    finally:
        sklearn.ensemble.GradientBoostingClassifier = plain


def reference_values() -> dict[str, dict[str, float]]:
    """case -> {our key: disentanglement_lib's value}, and ``<key>@disent`` for the measures disent also has
    (MIG, SAP, DCI); BetaVAE and FactorVAE as means over SAMPLED_SEEDS on SAMPLED_CASES."""
    from disent.metrics import _dci as disent_dci
    from disent.metrics import _mig as disent_mig
    from disent.metrics import _sap as disent_sap

    beta_vae, dci, factor_vae, mig, modexp, sap_score, utils = _import_disentanglement_lib()
    classes = grid_classes()
    y_train, y_test = (a.T for a in split(classes))
    out: dict[str, dict[str, float]] = {}
    for name, codes in fixed_cases().items():
        z = codes.astype(np.float64)
        z_train, z_test = (a.T for a in split(z))  # the libraries take (D, N) and (F, N)
        row: dict[str, float] = {}
        row["dis/mig"] = mig._compute_mig(z_train, y_train)["discrete_mig"]
        row["dis/mig@disent"] = disent_mig._compute_mig(z_train, y_train)["mig.discrete_score"]
        row["dis/sap"] = sap_score._compute_sap(z_train, y_train, z_test, y_test, False)["SAP_score"]
        row["dis/sap@disent"] = disent_sap._compute_sap(z_train, y_train, z_test, y_test, False)["sap.score"]
        with _seeded_trees():
            lib, dis = (dci._compute_dci(z_train, y_train, z_test, y_test),
                        disent_dci._compute_dci(z_train, y_train, z_test, y_test))
        for part in ("disentanglement", "completeness"):
            row[f"dis/dci_{part}"], row[f"dis/dci_{part}@disent"] = lib[part], dis[f"dci.{part}"]
        row["dis/dci_informativeness"] = lib["informativeness_test"]
        row["dis/dci_informativeness@disent"] = dis["dci.informativeness_test"]
        mi = utils.discrete_mutual_info(utils.make_discretizer(z_train), y_train)
        row["dis/modularity"] = modexp.modularity(mi)
        if name != "dead":  # its zero-std dimensions become NaN in the library's normalisation
            train_n, mean, std = utils.normalize_data(z_train)
            test_n, _, _ = utils.normalize_data(z_test, mean, std)
            row["dis/explicitness"] = np.mean([modexp.explicitness_per_factor(train_n, y_train[i], test_n,
                                                                              y_test[i])[1]
                                               for i in range(len(y_train))])
        data = GridData(classes)
        represent = partial(np.take, z, axis=0)  # representation_function: row indices -> their codes
        seeds = SAMPLED_SEEDS if name in SAMPLED_CASES else SAMPLED_SEEDS[:1]
        row["dis/betavae_score"] = np.mean([beta_vae.compute_beta_vae_sklearn(
            data, represent, np.random.RandomState(seed), batch_size=BATCH_SIZE, num_train=NUM_POINTS,
            num_eval=NUM_EVAL_POINTS)["eval_accuracy"] for seed in seeds])
        row["dis/factorvae_score"] = np.mean([factor_vae.compute_factor_vae(
            data, represent, np.random.RandomState(seed), batch_size=BATCH_SIZE, num_train=NUM_POINTS,
            num_eval=NUM_EVAL_POINTS, num_variance_estimate=len(classes))["eval_accuracy"] for seed in seeds])
        out[name] = {k: float(v) for k, v in row.items()}
    return out


if __name__ == "__main__":
    import pprint

    print("REFERENCE = " + pprint.pformat(reference_values(), width=110, sort_dicts=False))
