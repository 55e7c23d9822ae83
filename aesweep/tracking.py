"""MLflow, and only here: one parent run per sweep, one nested child run per trial.

Conventions (the contract that ``report`` and the MLflow UI rely on):
- experiment = the sweep's ``tracking.experiment`` or its name;
- parent run: tags ``aesweep.sweep`` (name), ``aesweep.spec_file``, ``aesweep.spec_hash``, ``aesweep.version``,
  ``aesweep.git_sha`` (when available), ``aesweep.storage``; the spec as artifact ``spec/sweep.yaml``;
- child run per trial: ``mlflow.parentRunId``, ``aesweep.trial_id``, ``aesweep.node`` (Ray node id),
  ``aesweep.pid`` (the trial's process) and, after a retry or resume from a checkpoint,
  ``aesweep.resumed_from_epoch`` (these three describe the latest attempt); params = the trial config flattened
  with dots; per-epoch metrics with step = epoch; final metrics; artifacts
  ``figures/*.png``, ``model/state_dict.pt``, ``spec/trial.yaml``. A retried or resumed trial re-attaches to its
  child run (found by its trial id) and skips epochs already logged, so nothing is duplicated.
- runs end FINISHED, FAILED (reason in tag ``aesweep.failure``) or KILLED (pruned by the scheduler, or stopped).

With the sqlite default, many trial processes write at once; sqlite allows one writer, so every write retries
with backoff on "database is locked" instead of losing a row.
"""
from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aesweep import __version__

T = TypeVar("T")
DEFAULT_URI = "sqlite:///mlflow.db"
TRIAL_TAG = "aesweep.trial_id"
SWEEP_TAG = "aesweep.sweep"
FAILURE_TAG = "aesweep.failure"
PRUNED_TAG = "aesweep.pruned"  # "true" on a KILLED child run that the scheduler stopped (vs. interrupted)


def resolve_uri(spec_uri: str | None = None, cli_uri: str | None = None) -> str:
    """--tracking-uri, else the spec's tracking.uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the
    working directory (the command line overrides the file, as --set does).

    Local stores are made absolute: trial processes may run in another directory (or on another node)."""
    uri = cli_uri or spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    elif "://" not in uri:  # a plain directory: MLflow's file store
        uri = str(Path(uri).resolve())
    return uri


def _retry(fn: Callable[[], T], attempts: int = 12) -> T:
    """Run an MLflow call, retrying while sqlite reports the database locked (one writer at a time)."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # MlflowException wraps sqlalchemy's OperationalError
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def experiment_id(uri: str, name: str) -> str:
    c = client(uri)
    found = _retry(lambda: c.get_experiment_by_name(name))
    if found is not None:
        return found.experiment_id
    try:
        return _retry(lambda: c.create_experiment(name))
    except Exception:  # another process created it first
        found = _retry(lambda: c.get_experiment_by_name(name))
        if found is None:
            raise
        return found.experiment_id


def start_parent(uri: str, experiment: str, sweep: str, spec_yaml: str, tags: dict[str, str]) -> str:
    """Create the sweep's parent run (RUNNING) with its tags and the spec artifact; returns its run id."""
    c = client(uri)
    exp = experiment_id(uri, experiment)
    all_tags = {SWEEP_TAG: sweep, "aesweep.version": __version__, **tags}
    if sha := git_sha():
        all_tags["aesweep.git_sha"] = sha
    run = _retry(lambda: c.create_run(exp, tags=all_tags, run_name=sweep))
    log_text(uri, run.info.run_id, spec_yaml, "spec/sweep.yaml")
    return run.info.run_id


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(text)
        parent = str(Path(artifact_file).parent)
        _retry(lambda: client(uri).log_artifact(run_id, str(path), None if parent == "." else parent))


def set_status(uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run: FINISHED, FAILED (with the reason as a tag) or KILLED."""
    c = client(uri)
    if reason:
        _retry(lambda: c.set_tag(run_id, FAILURE_TAG, reason[:5000]))
    _retry(lambda: c.set_terminated(run_id, status))


def children(uri: str, parent_run_id: str) -> list[Any]:
    """Every child run of a parent run (any status)."""
    c = client(uri)
    parent = _retry(lambda: c.get_run(parent_run_id))
    return _retry(lambda: c.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50_000))


def trial_status(run: Any) -> str:
    """A child run's trial status as aesweep shows it: finished, running, failed, pruned (stopped by the
    scheduler) or stopped (KILLED otherwise: an interrupted sweep)."""
    status = {"FINISHED": "finished", "RUNNING": "running", "FAILED": "failed", "KILLED": "pruned"}.get(
        run.info.status, run.info.status.lower())
    if status == "pruned" and run.data.tags.get(PRUNED_TAG) != "true":
        status = "stopped"
    return status


def close_running_children(uri: str, parent_run_id: str, status: str = "KILLED",
                           keep: Iterable[str] = ()) -> int:
    """Mark child runs still RUNNING (their process died or was stopped) as ``status``; returns how many."""
    keep = set(keep)
    closed = 0
    for run in children(uri, parent_run_id):
        if run.info.status == "RUNNING" and run.data.tags.get(TRIAL_TAG) not in keep:
            set_status(uri, run.info.run_id, status)
            closed += 1
    return closed


class TrialRun:
    """The child run of one trial, opened in the trial's own process.

    Re-attaches to an existing child run with the same trial id (a retry after a worker died, or a resumed
    sweep); ``log_epoch`` skips epochs that run already holds, so a trial resumed from a checkpoint logs each
    epoch once.
    """

    def __init__(self, uri: str, parent_run_id: str, trial_id: str, run_name: str, tags: dict[str, str]):
        self.uri = uri
        self.client = client(uri)
        c = self.client
        parent = _retry(lambda: c.get_run(parent_run_id))
        existing = _retry(lambda: c.search_runs(
            [parent.info.experiment_id],
            f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1))
        if existing:
            self.run_id = existing[0].info.run_id
            history = _retry(lambda: c.get_metric_history(self.run_id, "epoch"))
            self.last_epoch = max((int(m.value) for m in history), default=0)
            self.resumed = True
            _retry(lambda: c.update_run(self.run_id, status="RUNNING"))
            for key, value in tags.items():
                _retry(lambda k=key, v=value: c.set_tag(self.run_id, k, v))
        else:
            all_tags = {"mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id, **tags}
            run = _retry(lambda: c.create_run(parent.info.experiment_id, tags=all_tags, run_name=run_name))
            self.run_id = run.info.run_id
            self.last_epoch = 0
            self.resumed = False

    @classmethod
    def attach(cls, uri: str, run_id: str) -> TrialRun:
        """An existing child run by its id, for logging more into it (an eval-only sweep); status untouched."""
        run = cls.__new__(cls)
        run.uri, run.client, run.run_id = uri, client(uri), run_id
        run.last_epoch, run.resumed = 0, True
        return run

    def log_params(self, params: dict[str, Any]) -> None:
        if self.resumed:
            return  # params are immutable in MLflow and were logged when the run was created
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite(v)]
        for i in range(0, len(items), 1000):
            _retry(lambda chunk=items[i:i + 1000]: self.client.log_batch(self.run_id, metrics=chunk))

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> bool:
        """Log one epoch's metrics with step = epoch, unless this run already holds that epoch."""
        if epoch <= self.last_epoch:
            return False
        self.log_metrics(metrics, epoch)
        self.last_epoch = epoch
        return True

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        log_text(self.uri, self.run_id, text, artifact_file)

    def end(self, status: str, reason: str | None = None) -> None:
        set_status(self.uri, self.run_id, status, reason)


def _finite(value: Any) -> bool:
    try:
        return float(value) == float(value) and abs(float(value)) != float("inf")
    except (TypeError, ValueError):
        return False
