"""Every searcher draws inside the space it was given, and a log range is log-uniform.

Two levels: each distribution's own draw and Optuna suggestion over many samples (with a goodness-of-fit test
over octaves for log ranges), and real sweeps (grid, random, TPE, NSGA-II) whose trials' values are read back
from the params their MLflow runs logged. Until 2026-12-07 the random chooser's log-int branch took its rounding
offset inside the exponential: `{int: [2, 32], log: true}` drew 1 in 9 of 80 trials and never above 20.
"""
from __future__ import annotations

import math
import random

import optuna
import pytest
from scipy import stats

from aesweep.service import search_space
from aesweep.spec.distributions import Choice, Grid, IntRange, LogUniform, Uniform, highest, lowest
from tests.conftest import write_spec

FORMS = {
    "uniform": Uniform[float](uniform=(0.5, 4.0)),
    "loguniform": LogUniform[float](loguniform=(1.0e-4, 1.0e-2)),
    "int": IntRange[int](bounds=(32, 64)),
    "int log": IntRange[int](bounds=(2, 32), log=True),
    "choice": Choice[int](choice=[16, 4, 64]),
    "grid": Grid[str](grid=["ae", "vae"]),
}


def inside(dist, value) -> bool:
    if isinstance(dist, Choice | Grid):
        return value in dist.options
    if isinstance(dist, IntRange):
        return isinstance(value, int) and dist.low() <= value <= dist.high()
    return isinstance(value, float) and dist.low() <= value <= dist.high()


def test_each_form_owns_its_ends():
    assert [(lowest(d), highest(d)) for d in FORMS.values()] == [
        (0.5, 4.0), (1.0e-4, 1.0e-2), (32, 64), (2, 32), (4, 64), ("ae", "ae")]
    assert (lowest(7), highest(7)) == (7, 7)  # a fixed value is its own ends


@pytest.mark.parametrize("form", FORMS)
def test_random_draws_lie_inside_and_reach_both_ends(form):
    dist = FORMS[form]
    rng = random.Random(0)
    draws = [dist.draw(rng) for _ in range(20000)]
    assert all(inside(dist, v) for v in draws), [v for v in draws if not inside(dist, v)][:5]
    if isinstance(dist, Choice | Grid):
        assert set(draws) == set(dist.options)
    elif isinstance(dist, IntRange):
        assert min(draws) == dist.low() and max(draws) == dist.high()
    else:  # continuous: within 1% of each end (in log units for loguniform)
        scale = math.log if isinstance(dist, LogUniform) else (lambda x: x)
        span = scale(dist.high()) - scale(dist.low())
        assert scale(min(draws)) - scale(dist.low()) < 0.01 * span
        assert scale(dist.high()) - scale(max(draws)) < 0.01 * span


def _octave_test(values: list[float], lo: float, hi: float, expected_share) -> float:
    """p-value of a chi-square test of ``values`` over the octaves [lo*2^i, lo*2^(i+1)) of [lo, hi] (the last
    one closed at hi, and partial where hi / lo is no power of 2)."""
    edges = [lo * 2 ** i for i in range(math.ceil(math.log2(hi / lo)))] + [hi]
    bins = list(zip(edges, edges[1:], strict=False))
    observed = [sum(a <= v < b or (b == hi and v == hi) for v in values) for a, b in bins]
    expected = [expected_share(a, b) * len(values) for a, b in bins]
    return stats.chisquare(observed, expected).pvalue


def test_random_loguniform_is_uniform_over_octaves():
    dist = FORMS["loguniform"]
    rng = random.Random(1)
    draws = [dist.draw(rng) for _ in range(20000)]
    # 1e-4..1e-2 is 6.64 octaves: the share of [a, b) is log(b / a) / log(100) (the last one partial).
    p = _octave_test(draws, 1.0e-4, 1.0e-2, lambda a, b: math.log(b / a) / math.log(100.0))
    assert p > 1e-3


def _int_log_share(lo: int, hi: int):
    """Octave [a, b)'s share under Optuna's rule: log-uniform on [lo - 1/2, hi + 1/2], rounded."""
    total = math.log((hi + 0.5) / (lo - 0.5))

    def share(a: float, b: float) -> float:
        ks = range(max(lo, math.ceil(a)), min(hi, math.ceil(b) - 1) + 1)
        extra = [hi] if b == hi else []  # the last octave closes at hi
        return sum(math.log((k + 0.5) / (k - 0.5)) for k in [*ks, *extra]) / total

    return share


@pytest.mark.parametrize("source", ["random", "optuna"])
def test_int_log_is_log_uniform_over_octaves(source):
    """Random search and Optuna's own sampler give latent sizes 2..32 the same octave shares: 2-3, 4-7, 8-15,
    16-32. The old random chooser failed both asserts: 7.6% of its draws were 1, none above 20, p = 0.0."""
    dist = FORMS["int log"]
    n = 20000 if source == "random" else 3000
    if source == "random":
        rng = random.Random(2)
        draws = [dist.draw(rng) for _ in range(n)]
    else:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
        draws = [dist.suggest(study.ask(), "model.latent_dim") for _ in range(n)]
    assert all(inside(dist, v) for v in draws)
    assert _octave_test(draws, 2, 32, _int_log_share(2, 32)) > 1e-3


@pytest.mark.parametrize("form", FORMS)
def test_optuna_suggestions_lie_inside(form):
    dist = FORMS[form]
    for sampler in (optuna.samplers.TPESampler(seed=0, n_startup_trials=5), optuna.samplers.NSGAIISampler(seed=0)):
        study = optuna.create_study(sampler=sampler)
        for i in range(40):
            trial = study.ask()
            value = dist.suggest(trial, "x")
            assert inside(dist, value), (type(sampler).__name__, value)
            study.tell(trial, float(i % 7))


def test_random_sweep_configs_are_reproducible_draws_inside_the_space():
    """The sweep's own path from a sample index to a config (sweep.trial_config), over many indices."""
    from aesweep.spec.load import parse_spec
    from tests.conftest import spec_data

    data = spec_data("space", model={"latent_dim": {"int": [2, 32], "log": True}},
                     train={"lr": {"loguniform": [1.0e-4, 1.0e-2]}},
                     search={"algorithm": "random", "num_samples": 400})
    spec = parse_spec(__import__("json").dumps(data))
    ctx = {"aesweep": {"spec": spec.model_dump_json(by_alias=True)}}
    latents = [search_space.trial_config({**ctx, "sample": i}).model.latent_dim for i in range(400)]
    assert all(2 <= z <= 32 for z in latents) and max(latents) > 20 and min(latents) == 2
    assert latents == [search_space.trial_config({**ctx, "sample": i}).model.latent_dim for i in range(400)]
    assert _octave_test(latents, 2, 32, _int_log_share(2, 32)) > 1e-3


SPACE = {  # every form a searcher can meet; the grid algorithm takes the categorical ones only
    "model": {"latent_dim": {"int": [2, 32], "log": True}},
    "objective": {"variant": {"choice": ["ae", "vae"]}, "vae": {"beta": {"uniform": [0.5, 4.0]}}},
    "train": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "batch_size": {"int": [32, 64]}},
}
GRID_SPACE = {"model": {"latent_dim": {"grid": [2, 5, 32]}}, "objective": {"variant": {"choice": ["ae", "vae"]}}}


@pytest.mark.parametrize("algorithm", ["grid", "random", "tpe", "nsga2"])
def test_a_real_sweeps_logged_params_lie_inside_the_space(algorithm, local_ray, store, tmp_path):
    space = GRID_SPACE if algorithm == "grid" else SPACE
    path = write_spec(tmp_path, f"space-{algorithm}", **space,
                      search={"algorithm": algorithm, "num_samples": 6, "max_concurrent": 2,
                              "metrics": {"val/loss": "min", "val/mse": "min"} if algorithm == "nsga2"
                              else {"val/loss": "min"}},
                      eval={"metrics": ["mse"], "probes": [], "clustering": [], "figures": []},
                      dataset={"train_size": 128, "test_size": 32})
    from tests.service.test_driver import run

    outcome = run(store, path)
    children = store.children(outcome.state.parent_run_id)
    assert len(children) == (6 if algorithm != "grid" else 3 * 2) and outcome.counts["finished"] == len(children)
    for child in children:
        p = child.data.params
        z = int(p["model.latent_dim"])
        if algorithm == "grid":
            assert z in (2, 5, 32) and p["objective.variant"] in ("ae", "vae")
            continue
        assert 2 <= z <= 32
        assert 1.0e-4 <= float(p["train.lr"]) <= 1.0e-2
        assert 32 <= int(p["train.batch_size"]) <= 64
        assert p["objective.variant"] in ("ae", "vae")
        if p["objective.variant"] == "vae":
            assert 0.5 <= float(p["objective.beta"]) <= 4.0
    if algorithm == "grid":
        assert sorted((int(c.data.params["model.latent_dim"]), c.data.params["objective.variant"])
                      for c in children) == sorted((z, v) for z in (2, 5, 32) for v in ("ae", "vae"))
