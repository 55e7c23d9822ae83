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

With a tracking server (a cluster's head), a server that is down or restarting must not lose a row either: MLflow's
own HTTP client already retries each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 by default, exponential
backoff: about two minutes), and ``_retry`` retries a call that still failed for a transient reason (connection
refused or reset, a timeout, HTTP 429/5xx) until ``AESWEEP_MLFLOW_RETRY_S`` seconds (600) have passed. Retrying a
write is safe: a metric batch is built once (same timestamps), and MLflow's store drops a metric row that it
already holds; tags, status and artifact uploads overwrite. Creating a run is not idempotent: ``TrialRun`` checks
for a second run of its trial afterwards and deletes the newer one.

Each attempt of a trial tags its child run with ``aesweep.attempt`` (a random id) and checks before every write
that the tag is still its own: an attempt that Ray gave up on (its node was cut off, then came back) but that
still runs stops with ``Superseded`` instead of logging epochs that its successor logs too.
"""
from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
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
ATTEMPT_TAG = "aesweep.attempt"  # the id of the trial attempt that owns the child run now
RETRY_ENV = "AESWEEP_MLFLOW_RETRY_S"
DEFAULT_RETRY_S = 600.0
RETRIES_TAG = "aesweep.tracking_retries"  # on a trial's run: calls this attempt retried over an unreachable server

# Retries made by _retry in this process, by cause: evidence that a server outage was carried through by aesweep
# (not by MLflow's own per-request retries, which MLFLOW_HTTP_REQUEST_MAX_RETRIES controls).
RETRIES = {"transient": 0, "locked": 0}


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


def retry(fn: Callable[[], T], attempts: int = 12) -> T:
    """Run an MLflow call, retrying while sqlite reports the database locked (one writer at a time, up to
    ``attempts`` tries) or while the tracking server is unreachable or failing transiently (up to
    ``AESWEEP_MLFLOW_RETRY_S`` seconds, on top of MLflow's own per-request retries)."""
    delay = 0.05
    deadline = None
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:  # MlflowException wraps sqlalchemy's OperationalError and requests' errors
            attempt += 1
            if "locked" in str(err).lower():
                if attempt >= attempts:
                    raise
                RETRIES["locked"] += 1
            elif _transient(err):
                if deadline is None:
                    deadline = time.monotonic() + float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S))
                if time.monotonic() >= deadline:
                    raise
                RETRIES["transient"] += 1
                delay = max(delay, 1.0)
            else:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 10.0 if deadline is not None else 2.0)


_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
_TRANSIENT_TEXT = ("failed with exception", "failed with timeout exception", "max retries exceeded",
                   "connection refused", "connection reset", "connection aborted", "remotedisconnected",
                   "temporarily_unavailable", "bad gateway", "service unavailable")


def _transient(err: BaseException) -> bool:
    """An error that a later try may not have: the server down, restarting or overloaded (not a bad request, a
    missing run or a refused password)."""
    import requests

    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
            return True
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        if status is None and hasattr(err, "get_http_status_code"):
            status = err.get_http_status_code()
        if status in _TRANSIENT_STATUS:
            return True
        if status in (400, 401, 403, 404):
            return False
        if any(text in str(err).lower() for text in _TRANSIENT_TEXT):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


class Superseded(RuntimeError):
    """Another attempt of this trial owns its child run now (Ray retried the trial elsewhere): this one stops."""


def client(uri: str):
    """An MlflowClient for ``uri``; callers outside this module use the functions below, which retry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


# The calls the report, the CLI and eval-only sweeps make, each through ``retry``.


def get_run(uri: str, run_id: str) -> Any:
    return retry(lambda: client(uri).get_run(run_id))


def set_tag(uri: str, run_id: str, key: str, value: str) -> None:
    retry(lambda: client(uri).set_tag(run_id, key, value))


def metric_history(uri: str, run_id: str, key: str) -> list[Any]:
    """Every value ``run_id`` logged for metric ``key`` (MLflow Metric objects: step, value, timestamp)."""
    return retry(lambda: client(uri).get_metric_history(run_id, key))


def list_artifacts(uri: str, run_id: str, path: str) -> list[Any]:
    return retry(lambda: client(uri).list_artifacts(run_id, path))


def download_artifacts(uri: str, run_id: str, path: str, dst: str) -> str:
    """Download artifact ``path`` (a file or folder) of ``run_id`` under ``dst``; the local path."""
    return retry(lambda: client(uri).download_artifacts(run_id, path, dst))


def log_artifact(uri: str, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
    retry(lambda: client(uri).log_artifact(run_id, local_path, artifact_path))


def runs_of_sweep(uri: str, sweep: str, max_results: int = 20) -> list[Any]:
    """The runs tagged with sweep name ``sweep`` in every experiment, newest first."""
    experiments = retry(lambda: client(uri).search_experiments())
    if not experiments:
        return []
    return retry(lambda: client(uri).search_runs(
        [e.experiment_id for e in experiments], f"tags.`{SWEEP_TAG}` = '{sweep}'",
        order_by=["attributes.start_time DESC"], max_results=max_results))


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def experiment_id(uri: str, name: str) -> str:
    c = client(uri)
    found = retry(lambda: c.get_experiment_by_name(name))
    if found is not None:
        return found.experiment_id
    try:
        return retry(lambda: c.create_experiment(name))
    except Exception:  # another process created it first
        found = retry(lambda: c.get_experiment_by_name(name))
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
    run = retry(lambda: c.create_run(exp, tags=all_tags, run_name=sweep))
    log_text(uri, run.info.run_id, spec_yaml, "spec/sweep.yaml")
    return run.info.run_id


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(text)
        parent = str(Path(artifact_file).parent)
        retry(lambda: client(uri).log_artifact(run_id, str(path), None if parent == "." else parent))


def set_status(uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run: FINISHED, FAILED (with the reason as a tag) or KILLED."""
    c = client(uri)
    if reason:
        retry(lambda: c.set_tag(run_id, FAILURE_TAG, reason[:5000]))
    retry(lambda: c.set_terminated(run_id, status))


def set_status_running(uri: str, run_id: str) -> None:
    """Mark a run RUNNING again (a resumed sweep's parent)."""
    c = client(uri)
    retry(lambda: c.update_run(run_id, status="RUNNING"))


def children(uri: str, parent_run_id: str) -> list[Any]:
    """Every child run of a parent run (any status)."""
    c = client(uri)
    parent = retry(lambda: c.get_run(parent_run_id))
    return retry(lambda: c.search_runs(
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
        self.attempt = uuid.uuid4().hex
        self.retries_before = RETRIES["transient"]
        tags = {**tags, ATTEMPT_TAG: self.attempt}
        c = self.client
        parent = retry(lambda: c.get_run(parent_run_id))
        query = f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"
        existing = self._oldest(parent.info.experiment_id, query)
        if existing is None:
            all_tags = {"mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id, **tags}
            created = retry(lambda: c.create_run(parent.info.experiment_id, tags=all_tags, run_name=run_name))
            # A create whose reply was lost and was retried, or another attempt racing this one, makes a second
            # run of the trial: the oldest one is the trial's run, the others are deleted.
            oldest = self._oldest(parent.info.experiment_id, query, delete_others=True)
            if oldest is not None and oldest.info.run_id == created.info.run_id:
                self.run_id, self.last_epoch, self.resumed, self.held = created.info.run_id, 0, False, set()
                return
            existing = oldest or created
        self.run_id = existing.info.run_id
        # Own the run first, then read how far it got: an older attempt still running checks the tag before
        # each write, so nothing it logs after this line is lost or doubled.
        for key, value in tags.items():
            retry(lambda k=key, v=value: c.set_tag(self.run_id, k, v))
        retry(lambda: c.update_run(self.run_id, status="RUNNING"))
        history = retry(lambda: c.get_metric_history(self.run_id, "epoch"))
        self.last_epoch = max((int(m.value) for m in history), default=0)
        self.resumed = True
        self.held = set(existing.data.metrics)  # what the run holds already (final metrics: see log_final)

    def _oldest(self, experiment_id: str, query: str, delete_others: bool = False) -> Any:
        runs = retry(lambda: self.client.search_runs([experiment_id], query, max_results=50))
        if not runs:
            return None
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        if delete_others:
            for extra in runs[1:]:
                retry(lambda r=extra: self.client.delete_run(r.info.run_id))
        return runs[0]

    def check_owner(self) -> None:
        """Raise Superseded if another attempt of this trial has taken the run over."""
        if getattr(self, "attempt", None) is None:  # attach(): an eval-only sweep, no attempts
            return
        run = retry(lambda: self.client.get_run(self.run_id))
        owner = run.data.tags.get(ATTEMPT_TAG)
        if owner is not None and owner != self.attempt:
            raise Superseded(f"run {self.run_id}: attempt {owner} of this trial has taken over")

    @classmethod
    def attach(cls, uri: str, run_id: str) -> TrialRun:
        """An existing child run by its id, for logging more into it (an eval-only sweep); status untouched."""
        run = cls.__new__(cls)
        run.uri, run.client, run.run_id = uri, client(uri), run_id
        run.last_epoch, run.resumed, run.attempt, run.held = 0, True, None, set()
        return run

    def log_params(self, params: dict[str, Any]) -> None:
        if self.resumed:
            return  # params are immutable in MLflow and were logged when the run was created
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            retry(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.check_owner()
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite(v)]
        for i in range(0, len(items), 1000):
            retry(lambda chunk=items[i:i + 1000]: self.client.log_batch(self.run_id, metrics=chunk))

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """Log a trial's end-of-training metrics once: a trial that Tune resumed from a checkpoint older than
        its end (the state saved before the crash lagged its last epochs) trains those epochs again and ends
        again; the metrics its run already holds from the first end are not logged twice."""
        self.log_metrics({k: v for k, v in metrics.items() if k not in getattr(self, "held", set())}, step)

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> bool:
        """Log one epoch's metrics with step = epoch, unless this run already holds that epoch."""
        if epoch <= self.last_epoch:
            return False
        self.log_metrics(metrics, epoch)
        self.last_epoch = epoch
        return True

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.check_owner()
        retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        log_text(self.uri, self.run_id, text, artifact_file)

    def end(self, status: str, reason: str | None = None) -> None:
        self.check_owner()
        retried = RETRIES["transient"] - getattr(self, "retries_before", RETRIES["transient"])
        if retried:
            retry(lambda: self.client.set_tag(self.run_id, RETRIES_TAG, str(retried)))
        set_status(self.uri, self.run_id, status, reason)


def _finite(value: Any) -> bool:
    try:
        return float(value) == float(value) and abs(float(value)) != float("inf")
    except (TypeError, ValueError):
        return False
