"""A finished (or running) sweep as one pandas frame, read from MLflow: one row per trial, its params and the last
value of every metric; finding a sweep by its storage directory or its name; which way a metric is better.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aesweep.service import tracking
from aesweep.service.sweep_state import SweepState
from aesweep.spec.load import parse_spec
from aesweep.spec.sweep_spec import SweepSpec

# Params that repeat a configuration instead of changing it: aggregated over, never a row or column.
REPLICATE_PARAMS = ("train.seed", "dataset.fold")
LATENT = "model.latent_dim"
# Params that change between trials without describing the configuration (set by the sweep machinery).
NOT_CONFIG = {"name"}
# Direction of "better" by metric name (the last path element); anything else is higher-is-better.
LOWER_IS_BETTER = re.compile(r"(mse|rmse|mae|ergas|bce|bce_bits|loss|nn_distance|kl_bits|noise_frac|_s)$")
# Parameter counts (``model/params``, ``model/params/encoder``, ...: logged by the trials as metrics, or as params):
# numbers to show, not a configuration, and neither better nor worse when larger.
PARAM_COUNT = "model/params"



def lower_is_better(metric: str) -> bool:
    return bool(LOWER_IS_BETTER.search(metric.split("/")[-1] if "/" in metric else metric))



# --------------------------------------------------------------------------------------------------------------
# Reading a sweep


@dataclass
class SweepRecord:
    """A sweep as MLflow holds it: its spec, where it is, and one row per trial."""

    name: str
    uri: str
    parent_run_id: str
    experiment_id: str
    spec: SweepSpec
    frame: pd.DataFrame
    param_columns: list[str] = field(default_factory=list)
    metric_columns: list[str] = field(default_factory=list)
    parent_tags: dict[str, str] = field(default_factory=dict)  # the parent run's tags (aesweep.spec_file, ...)

    @property
    def finished(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "finished"]

    @property
    def varied(self) -> list[str]:
        """Config params whose value differs between finished trials (replicates excluded), in spec order."""
        done = self.finished
        out = []
        for column in self.param_columns:
            if column in REPLICATE_PARAMS or column in NOT_CONFIG:
                continue
            # A knob only some variants have (NaN elsewhere) varies only if it takes several values.
            if done[column].dropna().astype(str).nunique() > 1:
                out.append(column)
        return out

    @property
    def replicate(self) -> str | None:
        """The replicate param (folds or seeds) that takes several values, if any."""
        done = self.finished
        for column in REPLICATE_PARAMS:
            if column in done and done[column].nunique() > 1:
                return column
        return None


def _value(text: str | None) -> Any:
    """An MLflow param string back to a number where it is one (params are stored as strings)."""
    if text is None:
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def load_record(uri: str, parent_run_id: str, spec: SweepSpec | None = None) -> SweepRecord:
    """The sweep whose parent run is ``parent_run_id``: every child run as one row."""
    parent = tracking.get_run(uri, parent_run_id)
    if spec is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = tracking.download_artifacts(uri, parent_run_id, "spec/sweep.yaml", tmp)
            spec = parse_spec(Path(path).read_text(), "spec/sweep.yaml (MLflow)")
    rows, params, metrics = [], [], []
    for run in tracking.children(uri, parent_run_id):
        tags = run.data.tags
        row = {"trial_id": tags.get(tracking.TRIAL_TAG, "?"), "run_id": run.info.run_id,
               "status": tracking.trial_status(run),
               "reason": tags.get(tracking.FAILURE_TAG, ""), "start_time": run.info.start_time}
        for key, text in run.data.params.items():
            row[key] = _value(text)
            if key.startswith(PARAM_COUNT):  # a count logged as a param: a number to tabulate
                if key not in metrics:
                    metrics.append(key)
            elif key not in params:
                params.append(key)
        for key, value in run.data.metrics.items():
            row[key] = value
            if key not in metrics:
                metrics.append(key)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["trial_id", "run_id", "status", "reason", "start_time", *params, *metrics])
    frame = frame.sort_values(["start_time", "trial_id"]).reset_index(drop=True)
    name = parent.data.tags.get(tracking.SWEEP_TAG, parent.info.run_name or spec.name)
    return SweepRecord(name, uri, parent_run_id, parent.info.experiment_id, spec, frame,
                       _spec_order(params, spec), sorted(metrics), dict(parent.data.tags))


def _spec_order(params: list[str], spec: SweepSpec) -> list[str]:
    """Params in the order the spec's sections list them (variant before latent size before knobs)."""
    order: dict[str, int] = {}
    for key in ["objective.variant", LATENT, *spec.resolve().flat()]:
        order.setdefault(key, len(order))
    return sorted(params, key=lambda p: (order.get(p, len(order)), p))



# --------------------------------------------------------------------------------------------------------------
# Finding a sweep


def locate(name_or_path: str, storage: str | None = None, tracking_uri: str | None = None
           ) -> tuple[str, str, SweepSpec | None]:
    """(tracking URI, parent run id, spec if known locally) of a sweep given by its storage directory, its name
    under ``storage``, or its name in MLflow (the newest parent run tagged ``aesweep.sweep = NAME``).

    Raises FileNotFoundError with one line naming where it looked."""

    try:
        state = SweepState.load(name_or_path, storage)
    except FileNotFoundError as err:
        local_error = str(err)
    else:
        uri = tracking.resolve_uri(None, tracking_uri) if tracking_uri else state.uri
        spec = state.spec.model_copy()
        spec._source, spec._data = state.spec_file or None, state.spec.data
        return uri, state.parent_run_id, spec
    uri = tracking.resolve_uri(None, tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        # Reading must not create an empty store as a side effect.
        raise FileNotFoundError(f"{local_error}; and there is no MLflow store at {uri}")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines about the store's tables
    name = Path(name_or_path).name
    try:
        runs = tracking.runs_of_sweep(uri, name)
    except Exception as err:  # an unreachable server, a store that is not MLflow's
        raise FileNotFoundError(f"{local_error}; and MLflow at {uri} could not be read ({err})") from None
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        raise FileNotFoundError(f"{local_error}; and MLflow at {uri} has no sweep named {name}")
    return uri, parents[0].info.run_id, None

