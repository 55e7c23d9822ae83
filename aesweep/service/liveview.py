"""The live view of a running sweep: where each trial stands, how fast, how long to go, the best so far.

A sweep whose search metric is only known at the end (``test/mse``) used to show ``0 done, 2 running | 3:35
elapsed`` for minutes. ``LiveState`` is fed every result by the sweep driver (``sweep._Driver``, on the driver
process: Ray's Trial objects, no MLflow query) and builds a view dict; ``render_line`` makes it one line (the
form used when output is not a terminal: one line per change) and ``render_rich`` a line plus a small table of
the running trials (the terminal form, under rich.live).

What the view holds:
- counts (done / running / pending / pruned / failed) and elapsed seconds;
- per running trial: its epoch of its maximum, its latest per-epoch metrics, its seconds per epoch;
- epochs done of the planned total, the median seconds per epoch, and an ETA for the sweep: remaining
  trial-epochs (unstarted trials counted at the mean planned length) x seconds per epoch / trials running at once.
  A scheduler that stops trials makes the real end come sooner: the ETA is an upper bound then;
- the best final value of the first search metric, and while no trial has one, the best per-epoch value so far
  (over every epoch reported, not only the latest);
- for a multi-objective sweep, the size of the current Pareto front: of the finished trials on the search
  metrics, or before any finished, of the latest per-epoch values on their per-epoch counterparts.
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any

from aesweep.service.pareto import pareto_mask
from aesweep.service.search_space import trial_config
from aesweep.service.trainable import DONE, FAILED
from aesweep.service.trials import describe_config
from aesweep.spec.checks import scheduler_metrics
from aesweep.spec.sweep_spec import SweepSpec, per_epoch_counterpart


def epoch_metrics(spec: SweepSpec) -> dict[str, str]:
    """The per-epoch metrics the view follows: the scheduler's, else the per-epoch counterparts of the search
    metrics that have one, else ``val/loss``."""
    found = scheduler_metrics(spec)
    if not found:
        for name, mode in spec.search.metrics.items():
            counterpart = per_epoch_counterpart(name)
            if counterpart is not None:
                found.setdefault(counterpart, mode)
    return found or {"val/loss": "min"}


def _better(mode: str, value: float, than: float | None) -> bool:
    return than is None or (value < than if mode == "min" else value > than)


def _front_size(rows: list[dict[str, float]], modes: dict[str, str]) -> int:
    points = [[r[m] if mode == "min" else -r[m] for m, mode in modes.items()] for r in rows]
    return sum(pareto_mask(points))


class LiveState:
    """What the driver has seen of the trials' results, and the view built from it."""

    def __init__(self, spec: SweepSpec, expected_trials: int | None = None):
        self.spec = spec
        self.final = dict(spec.search.metrics)
        self.per_epoch = epoch_metrics(spec)
        self.expected = expected_trials
        self.best_epoch: dict[str, tuple[float, str]] = {}  # per-epoch metric -> (best value, trial id)
        self.epoch_seconds: deque[float] = deque(maxlen=32)  # recent seconds between two reports of a trial
        self._max_epochs: dict[str, int | None] = {}
        # Tune calls the driver's on_trial_result before it updates trial.last_result: the newest result of a
        # trial is the one seen here, not yet the Trial's.
        self._latest: dict[str, dict[str, Any]] = {}

    def observe(self, trial: Any, result: dict[str, Any]) -> None:
        """One result of one trial (the driver's on_trial_result)."""
        self._latest[trial.trial_id] = result
        for name, mode in self.per_epoch.items():
            value = result.get(name)
            if isinstance(value, int | float) and _better(mode, value, self.best_epoch.get(name, (None,))[0]):
                self.best_epoch[name] = (float(value), trial.trial_id)
        seconds = result.get("time_this_iter_s")
        if isinstance(seconds, int | float) and seconds > 0:
            self.epoch_seconds.append(float(seconds))

    def last_result(self, trial: Any) -> dict[str, Any]:
        """The newest result of ``trial``: the one observed, unless Tune's own is newer (a restored trial)."""
        seen, own = self._latest.get(trial.trial_id), trial.last_result or {}
        if seen is not None and seen.get("training_iteration", 0) >= own.get("training_iteration", 0):
            return seen
        return own

    def max_epochs(self, trial: Any) -> int | None:
        if trial.trial_id not in self._max_epochs:
            try:
                self._max_epochs[trial.trial_id] = trial_config(trial.config).train.epochs
            except Exception:  # a view must never break the sweep
                self._max_epochs[trial.trial_id] = None
        return self._max_epochs[trial.trial_id]

    def view(self, trials: list[Any], elapsed: float) -> dict[str, Any]:
        metric, mode = next(iter(self.final.items()))
        counts = {"done": 0, "running": 0, "pending": 0, "pruned": 0, "failed": 0}
        best = None
        running: list[dict[str, Any]] = []
        finished_rows: list[dict[str, float]] = []
        latest_rows: list[dict[str, float]] = []
        done_epochs = planned = 0
        lengths: list[int] = []
        for t in trials:
            last = self.last_result(t)
            epoch = int(last.get("epoch", 0) or 0)
            total = self.max_epochs(t)
            ended = t.status in ("TERMINATED", "ERROR") or bool(last.get(FAILED))
            if t.status == "RUNNING":
                counts["running"] += 1
            elif t.status == "PENDING":
                counts["pending"] += 1
            elif t.status == "ERROR" or last.get(FAILED):
                counts["failed"] += 1
            elif t.status == "TERMINATED" and not last.get(DONE):
                counts["pruned"] += 1
            elif t.status == "TERMINATED":
                counts["done"] += 1
            if total is not None:
                lengths.append(total)
            done_epochs += epoch
            planned += epoch if ended or total is None else total
            value = last.get(metric)
            if value is not None and _better(mode, value, best[0] if best else None):
                best = (value, t.trial_id, t.config)
            if all(isinstance(last.get(m), int | float) for m in self.final) and last.get(DONE):
                finished_rows.append({m: float(last[m]) for m in self.final})
            if all(isinstance(last.get(m), int | float) for m in self.per_epoch):
                latest_rows.append({m: float(last[m]) for m in self.per_epoch})
            if t.status == "RUNNING":
                running.append({"trial_id": t.trial_id, "label": describe_config(t.config), "epoch": epoch,
                                "max_epochs": total, "seconds": last.get("time_this_iter_s"),
                                "values": {m: last[m] for m in self.per_epoch if m in last}})
        expected = max(self.expected or 0, len(trials))
        if expected > len(trials):
            planned += (expected - len(trials)) * (round(statistics.mean(lengths)) if lengths else 0)
        epoch_s = statistics.median(self.epoch_seconds) if self.epoch_seconds else None
        remaining = max(planned - done_epochs, 0)
        eta = (remaining * epoch_s / max(1, counts["running"]) if epoch_s is not None and
               (lengths or remaining) else None)
        front = front_kind = None
        if len(self.final) > 1 and finished_rows:
            front, front_kind = _front_size(finished_rows, self.final), "final"
        elif len(self.per_epoch) > 1 and latest_rows:
            front, front_kind = _front_size(latest_rows, self.per_epoch), "per epoch"
        return {"counts": counts, "elapsed": elapsed, "metric": metric, "best": best, "total": len(trials),
                "expected": expected, "running": running, "epochs": (done_epochs, planned), "epoch_s": epoch_s,
                "eta": eta, "per_epoch": dict(self.per_epoch), "best_epoch": dict(self.best_epoch),
                "front": front, "front_kind": front_kind}


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _summary_parts(view: dict[str, Any]) -> list[str]:
    c = view["counts"]
    parts = [f"trials: {c['done']} done, {c['running']} running, {c['pending']} pending, {c['pruned']} pruned, "
             f"{c['failed']} failed", f"{_clock(view['elapsed'])} elapsed"]
    done, planned = view.get("epochs", (0, 0))
    if planned:
        pace = f"epochs {done}/{planned}"
        if view.get("epoch_s") is not None:
            pace += f", {view['epoch_s']:.1f} s/epoch"
        if view.get("eta") is not None and done < planned:
            pace += f", ETA {_clock(view['eta'])}"
        parts.append(pace)
    if view["best"] is not None:
        value, _, config = view["best"]
        parts.append(f"best {view['metric']} {value:.5g} ({describe_config(config)})")
    elif view.get("best_epoch"):
        name = next((m for m in view["per_epoch"] if m in view["best_epoch"]), None)
        if name is not None:
            value, trial_id = view["best_epoch"][name]
            parts.append(f"best {name} {value:.5g} so far ({trial_id}; no {view['metric']} yet)")
    if view.get("front") is not None:
        parts.append(f"Pareto front {view['front']}" + (" (per epoch)" if view["front_kind"] == "per epoch"
                                                        else ""))
    return parts


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def render_line(view: dict[str, Any]) -> str:
    """The one-line form: summary, then each running trial as ``id epoch/max metric value``."""
    parts = _summary_parts(view)
    if view.get("running"):
        shown = []
        for r in view["running"]:
            first = next(iter(view["per_epoch"]))
            of = f"/{r['max_epochs']}" if r["max_epochs"] else ""
            shown.append(f"{r['trial_id']} {r['epoch']}{of} {first} {_value(r['values'].get(first))}")
        parts.append("running: " + ", ".join(shown))
    return "  |  ".join(parts)


class _Ticking:
    """A rich renderable of a view whose clocks (elapsed, ETA) move on at each refresh of rich.live, between the
    driver's updates: a view frozen at '3:35 elapsed' for minutes is what this module is here to avoid."""

    def __init__(self, view: dict[str, Any]):
        self.view, self.at = view, time.monotonic()

    def __rich__(self) -> Any:
        since = time.monotonic() - self.at
        view = {**self.view, "elapsed": self.view["elapsed"] + since}
        if view.get("eta") is not None:
            view["eta"] = max(view["eta"] - since, 0.0)
        return _rich(view)


def render_rich(view: dict[str, Any]) -> Any:
    """The terminal form: the summary line and a table of the running trials (clocks ticking between updates)."""
    return _Ticking(view)


def _rich(view: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    line = Text("  |  ".join(_summary_parts(view)))
    if not view.get("running"):
        return line
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("trial", "config", "epoch", *view["per_epoch"], "s/epoch"):
        table.add_column(column, justify="left" if column in ("trial", "config") else "right")
    for r in view["running"]:
        of = f"/{r['max_epochs']}" if r["max_epochs"] else ""
        table.add_row(r["trial_id"], r["label"], f"{r['epoch']}{of}",
                      *(_value(r["values"].get(m)) for m in view["per_epoch"]), _value(r["seconds"]))
    return Group(line, table)
