"""Eval-only sweeps: new measurements (``eval.*`` overrides) on stored trials' weights, no retraining."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aesweep.service import tracking
from aesweep.service.driver import init_ray
from aesweep.service.trainable import trial_dataset
from aesweep.spec.load import apply_override
from aesweep.spec.sweep_spec import SweepSpec
from aesweep.spec.trial import TrialConfig
from aesweep.training.train import evaluate_stored

# --------------------------------------------------------------------------------------------------------------
# Eval-only sweep: new measurements on stored trials, no retraining


def check_eval_overrides(overrides: list[str]) -> str | None:
    """An eval-only sweep may change only ``eval.*``: the message for the first override that does not."""
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if not key.startswith("eval."):
            return (f"--set {override}: an eval-only sweep changes eval.* fields only (training is not re-run); "
                    f"to change {key}, run a new sweep")
    return None


def _evaluate_run(uri: str, run_id: str, overrides: list[str]) -> dict[str, Any]:
    """In a Ray worker: re-evaluate one finished trial from its MLflow artifacts (``spec/trial.yaml`` and
    ``model/state_dict.pt``) with ``overrides`` applied to its eval section, and log the new final metrics and
    figures into the same child run at the trial's last epoch. Training metrics and params are left as they are;
    tag ``aesweep.reevaluated`` records the overrides. Never raises: a failure is returned and tagged."""
    import tempfile

    import yaml


    try:
        with tempfile.TemporaryDirectory() as tmp:
            trial_yaml = tracking.download_artifacts(uri, run_id, "spec/trial.yaml", tmp)
            weights = tracking.download_artifacts(uri, run_id, "model/state_dict.pt", tmp)
            stored = Path(tmp) / "stored" / "model"  # evaluate_stored reads <dir>/model/state_dict.pt
            stored.mkdir(parents=True)
            Path(weights).rename(stored / "state_dict.pt")
            data = yaml.safe_load(Path(trial_yaml).read_text())
            for override in overrides:
                apply_override(data, override)
            cfg = TrialConfig.model_validate(data)
            metrics, figures = evaluate_stored(cfg, stored.parent, Path(tmp) / "figures", dataset=trial_dataset(cfg))
            history = tracking.metric_history(uri, run_id, "epoch")
            step = max((int(m.value) for m in history), default=0)
            run = tracking.TrialRun.attach(uri, run_id)
            run.log_metrics(metrics, step)
            for path in figures:
                run.log_artifact(path, "figures")
            tracking.set_tag(uri, run_id, "aesweep.reevaluated",
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(overrides)}".strip())
        return {"run_id": run_id, "status": "ok", "metrics": metrics}
    except Exception as err:  # one broken trial must not stop the others
        reason = f"{type(err).__name__}: {err}"
        with contextlib.suppress(Exception):
            tracking.set_tag(uri, run_id, "aesweep.eval_failure", reason[:5000])
        return {"run_id": run_id, "status": "failed", "reason": reason}


def evaluate_sweep(uri: str, parent_run_id: str, spec: SweepSpec, overrides: list[str], *,
                   address: str | None = None, progress: Callable[[dict[str, Any]], Any] | None = None
                   ) -> list[dict[str, Any]]:
    """Re-run evaluation on every finished trial of a sweep as Ray tasks (the spec's resources per task), logging
    into the same child runs. Returns one result per trial (``status`` ok or failed, with ``reason``)."""
    import ray

    runs = [r for r in tracking.children(uri, parent_run_id) if r.info.status == "FINISHED"]
    if not runs:
        return []
    init_ray(address)
    task = ray.remote(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu, max_retries=0)(_evaluate_run)
    pending = [task.remote(uri, r.info.run_id, list(overrides)) for r in runs]
    results: list[dict[str, Any]] = []
    started = time.time()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        results.append(ray.get(ready[0]))
        if progress is not None:
            progress({"done": len(results), "total": len(runs), "running": len(pending),
                      "failed": sum(r["status"] == "failed" for r in results), "elapsed": time.time() - started})
    return results

