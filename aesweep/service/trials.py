"""Tables of a sweep's trials as Ray Tune knows them: status counts, the best trial, a config in one line."""
from __future__ import annotations

from typing import Any

from aesweep.service import tracking
from aesweep.service.search_space import trial_config
from aesweep.service.sweep_state import SweepState

# --------------------------------------------------------------------------------------------------------------
# Views: live progress, status, summary


def count_statuses(trials: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"finished": 0, "running": 0, "pruned": 0, "failed": 0}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return counts


def trial_table(state: SweepState) -> list[dict[str, Any]]:
    """One row per trial from MLflow (works on a running sweep): id, status, the searched params, metrics."""
    spec = state.spec
    primary = next(iter(spec.search.metrics))
    rows = []
    for run in tracking.children(state.uri, state.parent_run_id):
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        rows.append({
            "trial_id": tags.get(tracking.TRIAL_TAG, "?"), "status": tracking.trial_status(run),
            "run_id": run.info.run_id,
            "variant": params.get("objective.variant"), "latent_dim": params.get("model.latent_dim"),
            "epochs": int(metrics.get("epoch", 0)), primary: metrics.get(primary),
            "reason": tags.get(tracking.FAILURE_TAG), "params": params, "metrics": metrics,
        })
    return sorted(rows, key=lambda r: r["trial_id"])


def best_trial(state: SweepState, trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    metric, mode = next(iter(state.spec.search.metrics.items()))
    scored = [t for t in trials if t["metrics"].get(metric) is not None and t["status"] == "finished"]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda t: t["metrics"][metric])


def describe_config(config: dict[str, Any] | None) -> str:
    """A short label of a trial's config for the live view: variant, latent size and searched knobs."""
    if not config or "aesweep" not in config:
        return "?"
    try:
        cfg = trial_config(config)
    except Exception:  # a view must never break the sweep
        return "?"
    o = cfg.objective
    knobs = ", ".join(f"{k}={getattr(o, k):.3g}" for k in ("beta", "sparsity", "noise_sigma", "temperature")
                      if isinstance(getattr(o, k), float))
    return f"{o.variant}, latent {cfg.model.latent_dim}" + (f", {knobs}" if knobs else "")



