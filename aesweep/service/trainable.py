"""The trainable: what runs in a Ray worker process for one trial. It opens the trial's MLflow child run, calls
``train.run_trial`` with ``report`` adapted to ``tune.report`` (and a checkpoint per epoch), and ends the run.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from aesweep.service import tracking
from aesweep.service.search_space import trial_config
from aesweep.spec.trial import TrialConfig

DONE = "aesweep/done"  # in a trial's last report: run_trial completed (finished or failed)
FAILED = "aesweep/failed"


# Metrics a trial reports once, at its end (logged even if a resumed run already holds that epoch).
FINAL_PREFIXES = ("test/", "probe/", "cluster/", "gen/", "latent/", "dis/", "best/", "time/eval", "time/probe",
                  "time/cluster", "time/dis", "time/train_s", "time/total_s")


# --------------------------------------------------------------------------------------------------------------
# The trainable (runs in a Ray worker process)

_DATASETS: dict[str, Any] = {}


def trial_dataset(cfg: TrialConfig) -> Any:
    """The trial's dataset, cached per worker process: with actor reuse, the next trial skips the load."""
    from aesweep.data import datasets  # deferred like the trainable's imports: it runs on the worker only

    key = cfg.dataset.model_dump_json()
    if key not in _DATASETS:
        _DATASETS.clear()  # one dataset per worker: a sweep over datasets must not pile them up in memory
        _DATASETS[key] = datasets.load_dataset(cfg.dataset)
    return _DATASETS[key]


def _finite_only(metrics: dict[str, Any]) -> dict[str, float]:
    # A NaN must not reach the scheduler's cutoff or the searcher.
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def trial_run_name(cfg: TrialConfig, trial_id: str) -> str:
    return f"{cfg.objective.variant}-z{cfg.model.latent_dim}-{trial_id.split('_')[-1]}"


def trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial, its MLflow child run, a checkpoint per epoch."""
    # Deferred: the driver imports this module to hand Tune the function, and never needs torch or training.
    import ray
    import torch
    from ray import tune

    from aesweep.training.train import failure_reason, load_checkpoint, pick_device, run_trial

    ctx = config["aesweep"]
    cfg = trial_config(config)
    if ctx.get("cpu"):
        torch.set_num_threads(max(1, int(ctx["cpu"])))
    context = tune.get_context()
    trial_id = context.get_trial_id()
    node = ray.get_runtime_context().get_node_id()
    run_name = trial_run_name(cfg, trial_id)
    checkpoint = tune.get_checkpoint()
    resume_dir = checkpoint.to_directory() if checkpoint is not None else None
    # Where this attempt runs (a retry after a worker or node died gets new values): node, process, and the
    # epoch of the checkpoint it continues from.
    tags = {"aesweep.node": node, "aesweep.device": str(pick_device(cfg.train.device)),
            "aesweep.pid": str(os.getpid())}
    if resume_dir is not None:
        tags["aesweep.resumed_from_epoch"] = str(int(load_checkpoint(resume_dir)["epoch"]))
    run = tracking.TrialRun(ctx["uri"], ctx["parent_run_id"], trial_id, run_name, tags=tags)
    run.log_params(cfg.flat())
    if not run.resumed:
        run.log_text(cfg.to_yaml(), "spec/trial.yaml")

    workdir = Path(context.get_trial_dir()) / "work"

    def report(metrics: dict[str, float], epoch: int, checkpoint_dir: Path | None) -> None:
        final = {k: v for k, v in metrics.items() if k.startswith(FINAL_PREFIXES)}
        run.log_epoch({k: v for k, v in metrics.items() if k not in final}, epoch)
        if final:
            run.log_final(final, epoch)
            for path in result_artifacts(workdir):
                run.log_artifact(path, path.parent.name)
            run.end("FINISHED")
        payload = _finite_only(metrics)
        payload["epoch"] = epoch
        if final:
            payload[DONE] = 1.0
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir
                    else None)

    try:
        result = run_trial(cfg, report, resume_dir, workdir=workdir, dataset=trial_dataset(cfg))
        reason = result.reason if result.status == "failed" else None
    except Exception as err:
        if type(err).__module__.split(".")[0] == "ray" or isinstance(err, tracking.Superseded):
            raise  # Tune's own control flow (a stop, a lost actor), or a newer attempt owns the run: not a failure
        # An error in the trial's own code or data is deterministic: retrying it would only fail again.
        # FailureConfig(max_failures) stays for what it is for: a process or node that died.
        reason = failure_reason(err)
    if reason is not None:
        run.end("FAILED", reason)
        # A result, not an exception: Ray must not retry a NaN (it would NaN again); no metric, so neither the
        # scheduler's cutoff nor the searcher sees a number from it.
        tune.report({FAILED: 1.0, DONE: 1.0, "aesweep/reason": reason})


def result_artifacts(workdir: Path) -> list[Path]:
    """The files a finished trial logs: figures/*.png and model/state_dict.pt."""
    return sorted((workdir / "figures").glob("*.png")) + [p for p in [workdir / "model" / "state_dict.pt"]
                                                           if p.exists()]



