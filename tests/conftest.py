"""Helpers for the sweep-service tests: tiny specs, a temporary MLflow store, CLI subprocesses.

The sweep tests run real Ray and a real MLflow sqlite store in temporary directories; these helpers keep every
trial tiny (generated shapes, a few hundred images, a narrow MLP, 1-4 epochs, cheap evaluation).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# Every Ray the suite starts (ray.init here, ray.cluster_utils, `ray start`, the CLI subprocesses, their workers)
# inherits this process's environment: pinned before anything imports Ray, it keeps them all on 127.0.0.1
# (aesweep.service.loopback says why an address argument alone is not enough). The on-prem lab's hosts start their Ray
# over SSH with their own environment and keep their namespace addresses.
from aesweep.service import loopback  # noqa: E402

loopback.pin_environment()

# The suite never reads or writes the user's home or caches: a clean machine and a used one run the same tests
# (a used ~/.cache/aesweep once hid a dataset-preparation race that only an empty cache shows). Set here, at
# import, so that every Ray worker and CLI subprocess the tests start inherits it. AESWEEP_TEST_KEEP=1 keeps the
# directory for a look afterwards.
_SANDBOX = Path(tempfile.mkdtemp(prefix="aesweep-tests-"))
for _var, _sub in (("AESWEEP_DATA", "data"), ("HOME", "home"), ("XDG_CACHE_HOME", "home/.cache"),
                   ("MPLCONFIGDIR", "home/.config/matplotlib"), ("TORCH_HOME", "home/.cache/torch")):
    (_SANDBOX / _sub).mkdir(parents=True, exist_ok=True)
    os.environ[_var] = str(_SANDBOX / _sub)


def pytest_unconfigure(config):
    if not os.environ.get("AESWEEP_TEST_KEEP"):
        shutil.rmtree(_SANDBOX, ignore_errors=True)

# The smallest trial that still exercises the whole path: train, validate, test metrics, a probe, a figure.
TINY: dict[str, Any] = {
    "dataset": {"name": "shapes", "train_size": 320, "test_size": 64, "val_fraction": 0.2},
    "model": {"backbone": "mlp", "width": 0.125, "latent_dim": 4},
    "objective": {"variant": "ae"},
    "train": {"epochs": 1, "batch_size": 64, "lr": 3.0e-3, "early_stopping": {"patience": None}},
    "eval": {"metrics": ["mse", "psnr", "ssim"], "probes": ["knn"], "clustering": [],
             "figures": ["reconstructions"]},
    "search": {"algorithm": "grid", "metrics": {"val/loss": "min"}, "max_failures": 2},
    "resources": {"cpu": 1},
}

# Per-epoch metrics every trial logs with step = epoch (train.run_trial's report).
EPOCH_METRICS = ("train/loss", "val/loss", "loss/recon", "val/mse", "val/psnr", "epoch")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_dist(value):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_dist(value: dict[str, Any]) -> bool:
    return any(k in value for k in ("choice", "grid", "uniform", "loguniform", "int"))


def spec_data(name: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """TINY with ``sections`` merged in (a distribution replaces a value, it is not merged into it)."""
    return _merge({"name": name, **TINY}, sections)


def write_spec(directory: Path, name: str, **sections: dict[str, Any]) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec_data(name, **sections), sort_keys=False))
    return path


def load(path: Path, overrides: list[str] | None = None, stages: list[str] | None = None):
    from aesweep.spec.load import load_spec

    return load_spec(path, overrides or [], stages or [])


def spec_file_problems(directory: Path, text: str) -> list[str]:
    """The problems ``load_spec`` raises for ``text`` written to ``directory/spec.yaml``, each as its one line with
    the directory left out (``spec.yaml:LINE: field: message``)."""
    from aesweep.spec.load import load_spec
    from aesweep.spec.problems import SpecError

    path = directory / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return [str(p).replace(str(directory) + "/", "") for p in err.value.problems]


class Store:
    """A sweep's temporary home: MLflow sqlite store + Ray Tune storage, and readers of what they hold."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.storage = str(root / "results")

    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def parent(self, experiment: str):
        exp = self.client.get_experiment_by_name(experiment)
        assert exp is not None, f"no MLflow experiment {experiment}"
        runs = self.client.search_runs([exp.experiment_id], f"attributes.run_name = '{experiment}'")
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, [r.info.run_name for r in parents]
        return parents[0]

    def children(self, parent_run_id: str) -> list[Any]:
        parent = self.client.get_run(parent_run_id)
        return self.client.search_runs([parent.info.experiment_id],
                                       f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=1000)

    def all_children(self, experiment: str) -> list[Any]:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return [r for r in self.client.search_runs([exp.experiment_id], max_results=1000)
                if "mlflow.parentRunId" in r.data.tags]

    def steps(self, run_id: str, key: str) -> list[int]:
        return sorted(m.step for m in self.client.get_metric_history(run_id, key))

    def artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        out = []
        for info in self.client.list_artifacts(run_id, path):
            out += self.artifacts(run_id, info.path) if info.is_dir else [info.path]
        return out

    def text(self, run_id: str, artifact: str) -> str:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, artifact, tmp)).read_text()

    def wait_for(self, experiment: str, ready: Callable[[list[Any]], Any], timeout: float = 180,
                 proc: subprocess.Popen | None = None) -> Any:
        """Poll the child runs until ``ready(children)`` returns something truthy (sqlite: readers never block
        the sweep's writers for long)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the sweep process exited ({proc.returncode}) before the condition held")
            try:
                found = ready(self.all_children(experiment))
            except Exception as err:  # a read racing the first writes (tables being created)
                if "locked" not in str(err).lower() and "no such table" not in str(err).lower():
                    raise
                found = None
            if found:
                return found
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout} s waiting on the sweep {experiment}")


def tune_trials(experiment_path: str) -> dict[str, Any]:
    """Ray Tune's own record of a sweep (its experiment state on disk; no Ray needed): trial id -> Trial, with
    ``status``, ``last_result`` and ``run_metadata.num_failures`` (how many times its process died)."""
    from ray.tune import ExperimentAnalysis

    # Tune's per-trial result files are off (MLflow is the record); its warning about them is noise here.
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    return {t.trial_id: t for t in ExperimentAnalysis(str(experiment_path)).trials}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the in-process sweeps of a test module (startup costs ~5 s)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             **loopback.init_kwargs())
    yield ray
    ray.shutdown()


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m aesweep ARGS`` in a subprocess (its own Ray unless --address says otherwise)."""
    return subprocess.run([sys.executable, "-m", "aesweep", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(env))


def cli_background(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m aesweep ARGS`` started in the background in its own session (process group), so that a
    signal for it never reaches pytest and its Ray processes can be found and reaped by group."""
    handle = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "aesweep", *args], cwd=REPO, stdout=handle,
                            stderr=subprocess.STDOUT, text=True, env=cli_env(env), start_new_session=True)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["COLUMNS"] = "200"  # rich tables: no truncated trial ids in captured output
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def kill_group(proc: subprocess.Popen) -> None:
    """Make sure a background CLI and everything in its process group is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def processes() -> dict[int, dict[str, Any]]:
    """Live processes from /proc: pid -> ppid, process group, state, command line."""
    out: dict[int, dict[str, Any]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        out[int(entry)] = {"ppid": int(fields[1]), "pgrp": int(fields[2]), "cmd": cmd}
    return out


def descendants(pid: int) -> dict[int, dict[str, Any]]:
    """Every live process below ``pid`` (children, grandchildren, ...), including those that left its group."""
    procs = processes()
    found: dict[int, dict[str, Any]] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, info in procs.items():
            if info["ppid"] == parent and child not in found:
                found[child] = info
                frontier.append(child)
    return found


def wait_gone(snapshot: dict[int, dict[str, Any]], which: Callable[[dict[str, Any]], bool] = lambda p: True,
              timeout: float = 30) -> dict[int, dict[str, Any]]:
    """Wait until the processes of ``snapshot`` selected by ``which`` have exited; returns the survivors
    (same pid and command line: a reused pid is not a survivor)."""
    deadline = time.monotonic() + timeout
    while True:
        live = processes()
        left = {pid: p for pid, p in snapshot.items() if pid in live and live[pid]["cmd"] == p["cmd"]}
        if not any(which(p) for p in left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.3)
