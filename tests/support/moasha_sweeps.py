"""MO-ASHA helpers shared by the scheduler's tests and the kill-anywhere test: hand-made trials and results, a
two-objective spec (test/mse min, probe/knn/acc max), and the rungs Tune saved in a sweep's callback state."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml
from ray.tune.schedulers import TrialScheduler

from tests.conftest import spec_data

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
TWO = {"val/mse": "min", "val/probe/knn/acc": "max"}


def trial(trial_id: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id)  # the scheduler reads nothing else of a Trial


def result(epoch: int, mse: float, acc: float) -> dict:
    return {"epoch": epoch, "val/mse": mse, "val/probe/knn/acc": acc}


BASE = """\
name: s
train: {epochs: 4}
search:
  algorithm: random
  metrics: {test/mse: min, probe/knn/acc: max}
"""


MO_EVAL = {"metrics": ["mse"], "probes": ["knn"], "figures": [], "online_probe_every": 1,
           "online_probe_size": 100}


def mo_spec(directory: Path, name: str, **sections: dict) -> Path:
    """TINY with ``sections``, searching test/mse (min) and probe/knn/acc (max) only (write_spec would merge the
    objectives into TINY's val/loss)."""
    data = spec_data(name, **sections)
    data["search"]["metrics"] = {"test/mse": "min", "probe/knn/acc": "max"}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def saved_rungs(experiment_path: Path) -> dict[float, dict[str, list[float]]]:
    """The MO-ASHA rungs in the newest callback state Tune wrote for the sweep: milestone -> {trial id: vector}."""
    import ray.cloudpickle as pickle

    newest = max(experiment_path.glob("callback-states-*.pkl"))  # the one Tune restores: newest by name
    states = [s for s in pickle.loads(newest.read_bytes()).values() if s and s.get("scheduler")]
    assert len(states) == 1, states
    return {r["milestone"]: r["recorded"] for r in states[0]["scheduler"]["state"]["rungs"]}


def saved_rungs_or_none(experiment_path: Path) -> dict[float, dict[str, list[float]]]:
    try:
        return saved_rungs(experiment_path)
    except (ValueError, AssertionError, OSError):  # no callback state saved yet
        return {}
