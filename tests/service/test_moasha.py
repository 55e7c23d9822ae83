"""MO-ASHA (aesweep.service.moasha): the rung / promotion logic on hand-made results, and real sweeps (its spec
checks: tests/spec/test_scheduler_checks.py; the shared Pareto ranking: test_pareto.py).

The unit tests feed the scheduler results the way Ray Tune's controller does (``on_trial_result`` with a result
dict) and read its decisions. The sweep tests run real Ray Tune and MLflow (sqlite): a sweep in which MO-ASHA stops
trials at a rung, and a driver killed mid-sweep then resumed with its rungs intact.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from aesweep.service import driver, pareto, tracking
from aesweep.service.liveview import render_line
from aesweep.service.moasha import MOASHAScheduler
from tests.conftest import Store, cli, cli_background, kill_group, load, tune_trials
from tests.support.moasha_sweeps import (
    CONTINUE,
    MO_EVAL,
    STOP,
    TWO,
    mo_spec,
    result,
    saved_rungs,
    saved_rungs_or_none,
    trial,
)

# --------------------------------------------------------------------------------------------------------------
# Ranking and promotion on hand-made results


def test_a_dominated_trial_is_stopped_and_a_dominating_one_promoted():
    s = MOASHAScheduler(TWO, max_t=8, grace_period=1, reduction_factor=2)
    assert s.on_trial_result(None, trial("a"), result(1, 0.10, 0.80)) == CONTINUE  # first at the rung
    assert s.on_trial_result(None, trial("b"), result(1, 0.20, 0.70)) == STOP  # worse on both
    assert s.stopped_at("b") == 1
    assert s.on_trial_result(None, trial("c"), result(1, 0.05, 0.90)) == CONTINUE  # better on both
    # Between rungs nothing is decided; at the next rung (epoch 2) the survivors are ranked again.
    assert s.on_trial_result(None, trial("a"), result(2, 0.09, 0.81)) == CONTINUE
    assert s.on_trial_result(None, trial("c"), result(2, 0.04, 0.91)) == CONTINUE
    assert s.on_trial_result(None, trial("a"), result(3, 0.08, 0.82)) == CONTINUE
    assert s.on_trial_result(None, trial("c"), result(8, 0.03, 0.93)) == STOP  # max_t
    assert s.stopped_at("c") is None  # reaching max_t is not being pruned
    rungs = dict(s.rungs())
    assert sorted(rungs) == [1, 2, 4] and sorted(rungs[1]) == ["a", "b", "c"] and sorted(rungs[2]) == ["a", "c"]


def test_a_stopped_trial_that_reports_again_is_stopped_again():
    # A driver killed between the decision and the trial's end: the resumed sweep restarts the trial from its
    # checkpoint, and its next result (past the rung, so never ranked there again) must not let it run on.
    s = MOASHAScheduler(TWO, max_t=8, grace_period=1, reduction_factor=2)
    s.on_trial_result(None, trial("a"), result(1, 0.10, 0.80))
    assert s.on_trial_result(None, trial("b"), result(1, 0.20, 0.70)) == STOP
    restored = MOASHAScheduler(TWO, max_t=8, grace_period=1, reduction_factor=2)
    restored.set_state(s.get_state())
    assert restored.on_trial_result(None, trial("b"), result(2, 0.01, 0.99)) == STOP
    assert restored.on_trial_result(None, trial("a"), result(2, 0.09, 0.81)) == CONTINUE


def test_a_pareto_optimal_trial_survives_where_a_single_metric_would_stop_it():
    # c is worse than a and b on val/mse but the best on accuracy: on the front. With rf 3/2 half the rung goes on.
    s = MOASHAScheduler(TWO, max_t=8, grace_period=1, reduction_factor=1.5)
    s.on_trial_result(None, trial("a"), result(1, 0.10, 0.60))
    s.on_trial_result(None, trial("b"), result(1, 0.12, 0.55))  # dominated by a
    assert s.on_trial_result(None, trial("c"), result(1, 0.30, 0.90)) == CONTINUE  # position 1 of 3 < 3 / 1.5
    assert s.on_trial_result(None, trial("d"), result(1, 0.13, 0.50)) == STOP  # dominated by a and b


def test_modes_are_respected():
    # The same numbers, the accuracy now minimised: the trial that was dominated dominates.
    flipped = MOASHAScheduler({"val/mse": "max", "val/probe/knn/acc": "min"}, max_t=4, reduction_factor=2)
    flipped.on_trial_result(None, trial("a"), result(1, 0.10, 0.80))
    assert flipped.on_trial_result(None, trial("b"), result(1, 0.20, 0.70)) == CONTINUE
    plain = MOASHAScheduler(TWO, max_t=4, reduction_factor=2)
    plain.on_trial_result(None, trial("a"), result(1, 0.10, 0.80))
    assert plain.on_trial_result(None, trial("b"), result(1, 0.20, 0.70)) == STOP


def test_ties():
    s = MOASHAScheduler(TWO, max_t=4, reduction_factor=2)
    s.on_trial_result(None, trial("a"), result(1, 0.10, 0.80))
    # An identical result shares the leader's position: it goes on (ASHA keeps a value equal to its cutoff).
    assert s.on_trial_result(None, trial("b"), result(1, 0.10, 0.80)) == CONTINUE
    # Two incomparable results, one slot: the epsilon-net starts from the best on the first metric (val/mse).
    t = MOASHAScheduler(TWO, max_t=4, reduction_factor=2)
    t.on_trial_result(None, trial("a"), result(1, 0.10, 0.50))
    assert t.on_trial_result(None, trial("b"), result(1, 0.20, 0.90)) == STOP
    u = MOASHAScheduler(TWO, max_t=4, reduction_factor=2)
    u.on_trial_result(None, trial("a"), result(1, 0.20, 0.90))
    assert u.on_trial_result(None, trial("b"), result(1, 0.10, 0.50)) == CONTINUE


def test_one_metric_ranks_as_a_sort_and_incomplete_results_decide_nothing():
    s = MOASHAScheduler({"val/loss": "min"}, max_t=9, grace_period=1, reduction_factor=3)
    assert [m for m, _ in s.rungs()] == [1, 3]
    assert s.on_trial_result(None, trial("a"), {"epoch": 1, "val/loss": 1.0}) == CONTINUE
    assert s.on_trial_result(None, trial("b"), {"epoch": 1, "val/loss": 0.5}) == CONTINUE
    assert s.on_trial_result(None, trial("c"), {"epoch": 1, "val/loss": 0.7}) == STOP  # 2nd of 3, top third goes
    # A failed trial's last report (no metric) and a NaN are never ranked.
    assert s.on_trial_result(None, trial("d"), {"epoch": 1, "aesweep/failed": 1.0}) == CONTINUE
    assert s.on_trial_result(None, trial("e"), {"epoch": 1, "val/loss": float("nan")}) == CONTINUE
    assert sorted(dict(s.rungs())[1]) == ["a", "b", "c"]
    # A trial that ends by itself (its last epoch, early stopping) still informs the rung it reached.
    s.on_trial_complete(None, trial("f"), {"epoch": 3, "val/loss": 0.2})
    assert dict(s.rungs())[3] == {"f": [0.2]}


def test_state_round_trips_through_json_and_refuses_other_settings(tmp_path):
    s = MOASHAScheduler(TWO, max_t=8, reduction_factor=2)
    for i, (mse, acc) in enumerate([(0.1, 0.8), (0.2, 0.7), (0.05, 0.9)]):
        s.on_trial_result(None, trial(f"t{i}"), result(1, mse, acc))
    s.save(str(tmp_path / "state.json"))
    restored = MOASHAScheduler(TWO, max_t=8, reduction_factor=2)
    restored.restore(str(tmp_path / "state.json"))
    assert restored.get_state() == s.get_state() == json.loads(json.dumps(s.get_state()))
    assert restored.stopped_at("t1") == 1
    # The restored one decides as the original: a newcomer worse than two of three recorded is stopped by both.
    assert restored.on_trial_result(None, trial("n"), result(1, 0.15, 0.75)) == STOP
    assert s.on_trial_result(None, trial("n"), result(1, 0.15, 0.75)) == STOP
    other = MOASHAScheduler(TWO, max_t=8, reduction_factor=3)
    with pytest.raises(ValueError, match="reduction_factor"):
        other.set_state(s.get_state())


# --------------------------------------------------------------------------------------------------------------
# The spec


# --------------------------------------------------------------------------------------------------------------
# Real sweeps


def _histories(store: Store, run_id: str, key: str) -> dict[int, tuple[float, int]]:
    """epoch -> (value, timestamp ms) of one metric of one run."""
    return {m.step: (m.value, m.timestamp) for m in store.client.get_metric_history(run_id, key)}


@pytest.mark.slow
def test_moasha_sweep_prunes_at_rungs_and_promotes_the_pareto_optimal(local_ray, store, tmp_path):
    # One trial at a time, so the order in which trials reach a rung is the order they ran in.
    lrs = [3.0e-3, 1.0e-6, 1.0e-3, 2.0e-6]
    path = mo_spec(tmp_path, "mo", train={"epochs": 4, "lr": {"grid": lrs}}, eval=MO_EVAL,
                      search={"algorithm": "grid", "max_concurrent": 1,
                              "scheduler": {"name": "moasha", "grace_period": 1, "reduction_factor": 2}})
    lines: list[str] = []
    outcome = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri,
                              progress=lambda view: lines.append(render_line(view)))
    children = store.children(outcome.state.parent_run_id)
    by_lr = {float(c.data.params["train.lr"]): c for c in children}
    assert sorted(by_lr) == sorted(lrs)
    first, hopeless = by_lr[3.0e-3], by_lr[1.0e-6]
    # The first trial leads every rung it reaches: it is never stopped.
    assert first.info.status == "FINISHED" and "test/mse" in first.data.metrics
    assert store.steps(first.info.run_id, "val/mse") == [1, 2, 3, 4]
    # The untrainable one is behind it at the first rung (n = 2, one place): KILLED there, tagged, no final eval.
    assert hopeless.info.status == "KILLED" and hopeless.data.tags["aesweep.pruned"] == "true"
    assert hopeless.data.tags[driver.RUNG_TAG] == "1"
    assert store.steps(hopeless.info.run_id, "val/mse") == [1]
    assert "test/mse" not in hopeless.data.metrics

    # Every decision agrees with the rule, read back from MLflow: at each rung (1, 2), in arrival order, a trial
    # that dominates all earlier arrivals goes on, and one dominated by at least n / 2 of them is stopped there.
    vectors = {c.info.run_id: {e: ((v, -_histories(store, c.info.run_id, "val/probe/knn/acc")[e][0]), ts)
                               for e, (v, ts) in _histories(store, c.info.run_id, "val/mse").items()}
               for c in children}
    for rung in (1, 2):
        arrivals = sorted((vec[rung][1], run_id, vec[rung][0]) for run_id, vec in vectors.items() if rung in vec)
        for i, (_, run_id, point) in enumerate(arrivals):
            earlier = [p for _, _, p in arrivals[:i]]
            went_on = rung + 1 in vectors[run_id]
            if earlier and all(pareto.dominates(point, p) for p in earlier):
                assert went_on, (rung, run_id)
            if sum(pareto.dominates(p, point) for p in earlier) >= (i + 1) / 2:
                assert not went_on, (rung, run_id)
    assert outcome.counts["pruned"] >= 1 and outcome.counts["finished"] >= 1
    assert outcome.counts["pruned"] + outcome.counts["finished"] == len(lrs)

    # The live view, in its one-line form: epochs of the planned total, pace and ETA, the best per-epoch value
    # while no test/mse exists, each running trial's epoch of its maximum, the per-epoch Pareto front.
    early = [line for line in lines if "so far" in line]
    assert early, lines
    assert any("epochs 1/16" in line and "s/epoch" in line and "ETA" in line for line in lines), lines
    assert any("best val/mse" in line and "no test/mse yet" in line for line in early)
    assert any("running: " in line and " 1/4 val/mse " in line for line in lines)
    assert any("Pareto front" in line for line in lines)
    assert "best test/mse" in lines[-1]


@pytest.mark.slow
def test_driver_killed_then_resumed_keeps_the_rungs(store, tmp_path):
    # rf 4 and at most 4 trials at a rung: only its leader goes on (position < n / 4). Trials run one at a time,
    # the good one first: it leads rung 1 (epoch 1). The driver is killed once that trial has FINISHED, so it
    # never reports epoch 1 again. Restored, rung 1 keeps its epoch-1 vector and ends holding all four trials;
    # lost, it would hold the good trial not at all (Tune had it TERMINATED) or with its epoch-3 vector (Tune
    # reran its last report), and a hopeless trial arriving first after the resume would lead an empty rung.
    # The check is on the rungs Tune saved, not on which hopeless trials reached rung 1 before the kill: that is
    # a race (on a fast machine all three did).
    name = "moresume"
    lrs = [3.0e-3, 1.0e-6, 2.0e-6, 3.0e-6]
    path = mo_spec(tmp_path, name, train={"epochs": 3, "lr": {"grid": lrs}},
                      dataset={"train_size": 600}, eval=MO_EVAL,
                      search={"algorithm": "grid", "max_concurrent": 1,
                              "scheduler": {"name": "moasha", "grace_period": 1, "reduction_factor": 4}})
    log = tmp_path / "run.log"
    proc = cli_background("run", str(path), "--storage", store.storage, "--tracking-uri", store.uri, log=log)
    try:
        store.wait_for(name, lambda ch: any(c.info.status == "FINISHED" for c in ch), proc=proc, timeout=300)
        # Killed at an instant whose saved state is known: once Tune's saved rungs hold the finished trial
        # (kills at unknown instants are tests/service/test_kill_anywhere.py's).
        good_id = next(c.data.tags[tracking.TRIAL_TAG] for c in store.all_children(name)
                       if c.info.status == "FINISHED")
        state_dir = Path(store.storage) / name
        deadline = time.monotonic() + 120
        while not any(good_id in recorded for recorded in saved_rungs_or_none(state_dir).values()):
            assert time.monotonic() < deadline and proc.poll() is None, "the finished trial never reached the state"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    before = {float(c.data.params["train.lr"]): c for c in store.all_children(name)}
    good = before[3.0e-3]
    assert good.info.status == "FINISHED"
    good_trial = good.data.tags[tracking.TRIAL_TAG]
    state_path = Path(store.storage) / name
    rung_before = saved_rungs(state_path)[1]
    assert good_trial in rung_before  # its epoch-1 checkpoint forced a snapshot, rungs included
    # A newer callback state cut short, as a driver killed while Tune copied it into the storage left it before
    # aesweep committed Tune's state whole: the resume sets it aside, says so, and restores from the intact one.
    intact = max(state_path.glob("callback-states-*.pkl")).read_bytes()
    (state_path / "callback-states-9999-12-31_23-59-59.pkl").write_bytes(intact[: len(intact) // 2])

    resumed = cli("resume", str(state_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # (not one of the state set Tune last saved whole: aesweep.service.tune_state puts that set back and this aside)
    assert "callback-states-9999-12-31_23-59-59.pkl was not part of the last state Tune saved whole" in resumed.stderr
    assert (state_path / "torn" / "callback-states-9999-12-31_23-59-59.pkl").exists()
    after = {float(c.data.params["train.lr"]): c for c in store.all_children(name)}
    assert sorted(after) == sorted(lrs)  # one child run per trial
    assert after[3.0e-3].info.run_id == good.info.run_id
    assert after[3.0e-3].info.status == "FINISHED"
    rung_after = saved_rungs(state_path)[1]
    assert rung_after[good_trial] == rung_before[good_trial]  # carried over, not re-recorded
    assert {c.data.tags[tracking.TRIAL_TAG] for c in after.values()} == set(rung_after)
    for lr in lrs[1:]:
        child = after[lr]
        assert child.info.status == "KILLED" and child.data.tags.get("aesweep.pruned") == "true", (lr, child.info)
        if lr not in before:  # started after the resume: ranked against the restored rung, stopped there
            assert child.data.tags[driver.RUNG_TAG] == "1"
            assert store.steps(child.info.run_id, "val/mse") == [1]
    trials = tune_trials(state_path)
    # Tune knows every trial once. Their statuses are asserted above, from MLflow, the record: Tune's on-disk
    # experiment state once (1 run in 3) still held a pruned trial's older status after the resumed driver exited.
    assert len(trials) == len(lrs)
    assert "1 finished, 3 pruned" in resumed.stdout
    # Not a terminal: one plain line per change, with the pace of the sweep in it.
    assert any(line.startswith("trials: ") and "epochs " in line for line in resumed.stdout.splitlines())


def test_the_driver_carries_either_schedulers_rungs_through_a_pickle():
    import ray.cloudpickle as pickle
    from ray.tune.schedulers import ASHAScheduler

    # Ray's ASHA: its attributes (what its own save() pickles), restored into the scheduler rebuilt on resume.
    asha = ASHAScheduler(time_attr="epoch", metric="val/loss", mode="min", max_t=8, grace_period=1,
                         reduction_factor=2)
    asha.on_trial_add(None, trial("a"))
    asha.on_trial_result(None, trial("a"), {"epoch": 1, "val/loss": 0.1})
    saved = pickle.loads(pickle.dumps(driver._scheduler_state(asha)))  # as Tune checkpoints callback state
    fresh = ASHAScheduler(time_attr="epoch", metric="val/loss", mode="min", max_t=8, grace_period=1,
                          reduction_factor=2)
    driver._set_scheduler_state(fresh, saved)
    fresh.on_trial_add(None, trial("b"))
    assert fresh.on_trial_result(None, trial("b"), {"epoch": 1, "val/loss": 0.5}) == STOP  # a is remembered
    # MO-ASHA: its JSON state.
    mo = MOASHAScheduler(TWO, max_t=8, reduction_factor=2)
    mo.on_trial_result(None, trial("a"), result(1, 0.1, 0.9))
    again = MOASHAScheduler(TWO, max_t=8, reduction_factor=2)
    driver._set_scheduler_state(again, pickle.loads(pickle.dumps(driver._scheduler_state(mo))))
    assert again.on_trial_result(None, trial("b"), result(1, 0.2, 0.8)) == STOP
    assert driver._scheduler_state(None) is None


