"""From a SweepSpec to each trial's TrialConfig, for every search algorithm: Optuna's define-by-run space
(tpe, nsga2), the grid's points, random search's seeded draws, a replicate's seed offset; and ``--smoke``.
"""
from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

from aesweep.spec.distributions import Distribution, replay
from aesweep.spec.load import parse_spec
from aesweep.spec.sweep_spec import SweepSpec
from aesweep.spec.trial import TrialConfig

SMOKE_OVERRIDES = {
    "dataset.train_size": 300, "dataset.test_size": 100, "train.epochs": 1, "eval.gen_samples": 100,
    "eval.label_efficiency": [], "eval.online_probe_size": 100,
}


def smoke_overrides(spec: SweepSpec) -> list[str]:
    """--smoke: any spec shrunk to 1-2 trials of 1 epoch on a few hundred images (for tests and first tries)."""
    out = []
    for key, value in SMOKE_OVERRIDES.items():
        if key in ("dataset.train_size", "dataset.test_size"):
            current = getattr(spec.dataset, key.split(".")[1])
            value = value if not isinstance(current, int) else min(current, value)
        out.append(f"{key}={json.dumps(value)}")
    if spec.search.scheduler.name != "none":
        out.append("search.scheduler.grace_period=1")  # one epoch: a longer grace period cannot fit
    out.append(f"search.num_samples={min(spec.search.num_samples, 2)}")
    out.append("search.seeds=1")
    warmup = getattr(getattr(spec.train, "schedule", None), "warmup_epochs", 0)
    if not isinstance(warmup, int) or warmup > 0:  # a warm-up must be shorter than the one smoke epoch
        out.append("train.schedule.warmup_epochs=0")
    return out


# --------------------------------------------------------------------------------------------------------------
# From the spec to trial configs


def _optuna_choose(ot_trial: Any) -> Callable[[str, Distribution], Any]:
    """A chooser backed by an Optuna trial: each distribution becomes an Optuna suggestion named by its path."""
    return lambda path, dist: dist.suggest(ot_trial, path)


def _random_choose(rng: random.Random) -> Callable[[str, Distribution], Any]:
    """A chooser for random search: each distribution's own seeded draw (``Distribution.draw``)."""
    return lambda path, dist: dist.draw(rng)


@functools.lru_cache(maxsize=4)
def spec_from_json(spec_json: str) -> SweepSpec:
    return parse_spec(spec_json)  # JSON is YAML


def define_by_run(spec_json: str, ot_trial: Any) -> dict[str, Any]:
    """OptunaSearch's define-by-run space: resolve the spec with Optuna suggestions. Conditional knobs are
    suggested only for the variant drawn, because ``SweepSpec.resolve`` asks for them only then."""
    trial = spec_from_json(spec_json).resolve(_optuna_choose(ot_trial))
    return {"trial": trial.model_dump(mode="json")}


def trial_config(config: dict[str, Any]) -> TrialConfig:
    """The TrialConfig a Ray Tune trial config stands for (any search algorithm)."""
    ctx = config["aesweep"]
    if "trial" in config:  # Optuna proposed it (define-by-run constants)
        cfg = TrialConfig.model_validate(config["trial"])
    else:
        spec = spec_from_json(ctx["spec"])
        if "point" in config:  # grid
            cfg = spec.resolve(replay(spec.grid()[config["point"]]))
        else:  # random: a seeded draw per sample index
            cfg = spec.resolve(_random_choose(random.Random(f"{spec.search.seed}:{config['sample']}")))
    seed_index = int(config.get("seed_index", 0))
    if seed_index:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": cfg.train.seed + seed_index})})
    return cfg



