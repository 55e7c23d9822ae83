"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune ``TrialScheduler``.

Schmucker et al. 2021 ("Multi-objective Asynchronous Successive Halving", arXiv 2106.12639); Syne Tune ships it as
``MOASHA``. Ray Tune's own schedulers take one metric, so a two-objective search (reconstruction vs probe accuracy)
could only stop trials on one of them and throw away trials that would have been on the Pareto front.

The rungs are ASHA's (Ray's ``AsyncHyperBandScheduler`` with one bracket): milestones ``grace_period * rf**k``
epochs below ``max_t``. When a trial reaches a milestone it has not been recorded at, its vector of metrics joins
that rung and is ranked against every vector recorded there so far:

1. non-dominated sorting: front 1 is the rung's Pareto set, front 2 the Pareto set of the rest, and so on;
2. inside a front, the paper's epsilon-net order (not NSGA-II's crowding distance): start with the front's best
   point on the first metric, then repeatedly take the point farthest (Euclidean, each metric min-max normalised
   over the rung) from those already taken.

The trial continues if its position in that order is within the top ``n / reduction_factor`` of the ``n`` vectors
(itself included), else it is stopped (``STOP``): ASHA's rule with a rank in place of a quantile cutoff. A trial
whose vector equals one already ranked better takes that better position (ASHA, too, keeps a value equal to its
cutoff). With one metric the order is the plain sort and the rule is ASHA's.

Why the epsilon-net: it is the tie-break the paper proposes and Syne Tune's default, it gives a total order
(crowding distance gives both ends of a front the same infinite distance, which in the small fronts of a rung is
most of the front), and it is deterministic once seeded by the first metric, so a resumed sweep ranks exactly as
the interrupted one would have. The normalisation is ours: without it a metric in [0, 1] (accuracy) would swamp
one in [0, 0.05] (MSE) in the distance.

State (the rungs and what was stopped where) is JSON-friendly (``get_state`` / ``set_state``) and also saved by
``save`` / ``restore`` (Ray's TrialScheduler API). Ray Tune 2.60 never calls a scheduler's save/restore itself on
``Tuner.restore`` (only the searcher and the callbacks are checkpointed with the experiment state), so the sweep
driver carries the state in its callback state: see ``sweep._Driver``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from aesweep.service.pareto import Vector, positions


def keeps(recorded: Sequence[Vector], new: Vector, reduction_factor: float) -> bool:
    """Whether a trial arriving at a rung with vector ``new`` continues, given the vectors ``recorded`` there
    before it: its position among the ``n = len(recorded) + 1`` is below ``n / reduction_factor``. The first
    trial at a rung always continues (as in ASHA)."""
    points = [*recorded, new]
    return positions(points)[-1] < len(points) / reduction_factor




class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA over ``metrics`` (name -> "min" / "max") on the monotone ``time_attr`` (aesweep: ``epoch``).

    Decisions: ``STOP`` at ``max_t``; at a rung, ``STOP`` unless the trial ranks in the rung's top
    ``1 / reduction_factor`` (module docstring); otherwise ``CONTINUE``. A result that lacks ``time_attr`` or one
    of the metrics (a failed trial's last report) is never ranked and never stops anything.
    """

    def __init__(self, metrics: dict[str, str], *, time_attr: str = "epoch", max_t: int = 100,
                 grace_period: int = 1, reduction_factor: float = 2.0):
        if not metrics or any(mode not in ("min", "max") for mode in metrics.values()):
            raise ValueError(f"metrics must map names to 'min' or 'max', got {metrics!r}")
        if not (max_t > 0 and 0 < grace_period <= max_t and reduction_factor > 1):
            raise ValueError(f"need 0 < grace_period ({grace_period}) <= max_t ({max_t}) and reduction_factor "
                             f"({reduction_factor}) > 1")
        super().__init__()
        self._metrics = dict(metrics)
        self._metric = next(iter(metrics))  # what Tune's `metric` property shows; all of them are used
        self._time_attr = time_attr
        self._max_t = max_t
        self._grace_period = grace_period
        self._rf = float(reduction_factor)
        count = 1
        while grace_period * self._rf ** count < max_t:
            count += 1
        # Milestones below max_t (a trial is stopped at max_t anyway), highest first as in Ray's _Bracket: the
        # first milestone a result has passed without being recorded there is the one it is ranked at.
        self._rungs: list[tuple[float, dict[str, list[float]]]] = [
            (grace_period * self._rf ** k, {}) for k in reversed(range(count))
            if grace_period * self._rf ** k < max_t or k == 0]
        self._stopped: dict[str, float] = {}  # trial id -> the milestone it was stopped at

    # -- Tune's API -------------------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # The metrics come from the spec; a conflicting TuneConfig(metric=...) is refused, as ASHA refuses it.
        return not metric and not mode

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        pass

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id in self._stopped:
            # Stopped at a rung, yet reporting: the driver died after the decision and before Tune ended the
            # trial, and the resumed sweep restarted it from its checkpoint. The decision stands.
            return TrialScheduler.STOP
        vector = self._vector(result)
        if vector is None:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            return TrialScheduler.STOP
        return self._on_rung(trial.trial_id, result[self._time_attr], vector)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A trial that ended on its own (its last epoch, early stopping) still informs the rung it reached.
        vector = self._vector(result or {})
        if vector is not None:
            self._on_rung(trial.trial_id, result[self._time_attr], vector, decide=False)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass

    def debug_string(self) -> str:
        rungs = " | ".join(f"epoch {m:g}: {len(rec)} ranked" for m, rec in reversed(self._rungs))
        return f"MO-ASHA over {', '.join(self._metrics)}: {len(self._stopped)} stopped; {rungs}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as out:
            json.dump(self.get_state(), out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as src:
            self.set_state(json.load(src))

    # -- state ------------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything a resumed sweep needs to rank as this one would: the settings (checked on restore) and,
        per rung, each recorded trial's vector (minimised form)."""
        return {"kind": "moasha", "metrics": self._metrics, "time_attr": self._time_attr, "max_t": self._max_t,
                "grace_period": self._grace_period, "reduction_factor": self._rf,
                "rungs": [{"milestone": m, "recorded": {k: list(v) for k, v in rec.items()}}
                          for m, rec in self._rungs],
                "stopped": dict(self._stopped)}

    def set_state(self, state: dict[str, Any]) -> None:
        mine = self.get_state()
        for key in ("kind", "metrics", "time_attr", "max_t", "grace_period", "reduction_factor"):
            same = (list(state.get(key, {}).items()) == list(mine[key].items()) if key == "metrics"
                    else state.get(key) == mine[key])  # the metrics' order is the vectors' order
            if not same:
                raise ValueError(f"MO-ASHA state does not match this scheduler: {key} {state.get(key)!r} "
                                 f"vs {mine[key]!r}")
        self._rungs = [(float(r["milestone"]), {k: list(v) for k, v in r["recorded"].items()})
                       for r in state["rungs"]]
        self._stopped = dict(state["stopped"])

    # -- views ------------------------------------------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, str]:
        return dict(self._metrics)

    def rungs(self) -> list[tuple[float, dict[str, list[float]]]]:
        """(milestone, {trial id: vector}) lowest milestone first; vectors in minimised form."""
        return [(m, dict(rec)) for m, rec in reversed(self._rungs)]

    def stopped_at(self, trial_id: str) -> float | None:
        """The milestone a trial was stopped at, None if it was not stopped."""
        return self._stopped.get(trial_id)

    # -- internals --------------------------------------------------------------------------------------------
    def _vector(self, result: dict) -> list[float] | None:
        if self._time_attr not in result:
            return None
        values = []
        for name, mode in self._metrics.items():
            value = result.get(name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                return None
            values.append(float(value) if mode == "min" else -float(value))
        return values

    def _on_rung(self, trial_id: str, now: float, vector: list[float], decide: bool = True) -> str:
        for milestone, recorded in self._rungs:
            if now < milestone or trial_id in recorded:
                continue
            keep = keeps(list(recorded.values()), vector, self._rf)
            recorded[trial_id] = vector
            if decide and not keep:
                self._stopped[trial_id] = milestone
                return TrialScheduler.STOP
            break
        return TrialScheduler.CONTINUE
