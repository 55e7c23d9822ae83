"""A sweep survives a SIGKILL of its driver at any instant: killed again and again, each time followed by
`aesweep resume`, it ends with every trial accounted for once and nothing reported lost or doubled.

The instants are seeded and of three kinds: while the driver starts (Ray coming up, Tune writing tuner.pkl and
its first state), at a random moment after the session made progress (an epoch logged), and in the window right
after a trial's last report (its run FINISHED in MLflow, Tune about to record it and rewrite its state: the
instant that tore the only state copy before aesweep.service.tune_state).
"""
from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path

import pytest

from aesweep.service import tune_state
from tests.conftest import (
    EPOCH_METRICS,
    Store,
    cli,
    cli_background,
    descendants,
    kill_group,
    tune_trials,
    wait_gone,
)
from tests.support.moasha_sweeps import MO_EVAL, mo_spec, saved_rungs

pytestmark = pytest.mark.slow

# 12 trials of 6 epochs, MO-ASHA rungs at 2 and 4 (every trial trains 2 or more): ~40 trial-epochs, work for
# nine sessions of at least an epoch each.
LRS = [3.0e-3, 2.0e-3, 1.0e-3, 6.0e-4, 3.0e-4, 2.0e-4, 1.0e-4, 6.0e-5, 3.0e-5, 1.0e-5, 3.0e-6, 1.0e-6]
EPOCHS = 6
SEED = 20261207


def _spec(directory: Path, name: str) -> Path:
    # A narrow conv net on 640 images, ~1 s an epoch here: slow enough that a kill lands within a few epochs of
    # the instant it was aimed at (a tiny MLP ran the sweep's epochs in bursts faster than MLflow could be read).
    return mo_spec(directory, name, train={"epochs": EPOCHS, "lr": {"grid": LRS}, "batch_size": 32},
                    model={"backbone": "conv", "width": 0.25}, dataset={"train_size": 640}, eval=MO_EVAL,
                    search={"algorithm": "grid", "max_concurrent": 2,
                            "scheduler": {"name": "moasha", "grace_period": 2, "reduction_factor": 2}})


def _progress(store: Store, name: str) -> tuple[int, int]:
    """(epochs logged over all trials, trials that made their last report) as MLflow holds them now: a trial's
    last report follows its run's end (FINISHED) or is the rung it was stopped at (the driver then ends it)."""
    children = store.all_children(name)
    return (sum(int(c.data.metrics.get("epoch", 0)) for c in children),
            sum(c.info.status != "RUNNING" for c in children))


def _poll(store: Store, name: str, proc, condition, timeout: float) -> bool:
    """Poll MLflow until ``condition(epochs, finished)``; False if the driver exited first or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if condition(*_progress(store, name)):
                return True
        except Exception as err:  # a read racing the first writes (tables being created)
            if "locked" not in str(err).lower() and "no such table" not in str(err).lower():
                raise
        time.sleep(0.05)
    return False


def _rung_values(store: Store, name: str, experiment: Path) -> dict[tuple[float, float], list[float]]:
    """(learning rate, rung) -> the metric vector MO-ASHA recorded for that trial at that rung."""
    lr_of = {c.data.tags["aesweep.trial_id"]: float(c.data.params["train.lr"]) for c in store.all_children(name)}
    return {(lr_of[trial], milestone): vector for milestone, recorded in saved_rungs(experiment).items()
            for trial, vector in recorded.items()}


def test_a_sweep_killed_at_eight_seeded_instants_resumes_with_nothing_lost_or_doubled(tmp_path):
    rng = random.Random(SEED)
    # The kinds in a fixed order, the instants within each kind seeded. The last is a startup kill: it lands
    # whatever is left of the sweep (Ray's start alone outlasts its 6 s), where a kill on progress could find
    # the sweep over when a fast session left one trial to run (seen: 7 kills of 8, the last trial done first).
    plan = ["after progress", "after last report", "startup", "after progress", "after progress",
            "after last report", "after progress", "startup"]

    # The same sweep uninterrupted: the rungs a killed one must end with.
    reference = Store(tmp_path / "reference")
    reference.root.mkdir()
    done = cli("run", str(_spec(tmp_path, "reference")), "--storage", reference.storage, "--tracking-uri",
               reference.uri, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = _rung_values(reference, "reference", Path(reference.storage) / "reference")

    store = Store(tmp_path / "killed")
    store.root.mkdir()
    name = "killed"
    experiment = Path(store.storage) / name
    command = ("run", str(_spec(tmp_path, name)), "--storage", store.storage, "--tracking-uri", store.uri)
    kills: list[str] = []
    for session, kind in enumerate(plan):
        proc = cli_background(*command, log=tmp_path / f"session-{session}.log")
        try:
            started = time.monotonic()
            epochs, finished = (0, 0) if session == 0 else _progress(store, name)
            if kind == "startup":
                hit = not _poll(store, name, proc, lambda *_: False, timeout=rng.uniform(0.5, 6.0))
            elif kind == "after last report":
                hit = _poll(store, name, proc, lambda e, f, f0=finished: f > f0, timeout=300)
            else:
                hit = _poll(store, name, proc, lambda e, f, e0=epochs: e > e0, timeout=300)
                if hit:
                    hit = not _poll(store, name, proc, lambda *_: False, timeout=rng.uniform(0.0, 1.0))
            if hit and proc.poll() is None:
                ray_procs = descendants(proc.pid)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills.append(f"{kind} at {time.monotonic() - started:.1f} s: {_progress(store, name)} "
                                 f"(epochs, trials ended)")
                wait_gone(ray_procs, timeout=30)
        finally:
            kill_group(proc)
        command = ("resume", str(experiment))
        if proc.returncode == 0:  # the sweep ended before this kill
            break
    print("\n".join(kills))
    assert len(kills) == len(plan), f"the sweep ended after {len(kills)} kills: {kills}"

    resumed = cli("resume", str(experiment), timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # Each session's files came through whole: no resume had to set a torn file aside.
    assert not (experiment / "torn").exists(), sorted(p.name for p in (experiment / "torn").iterdir())
    assert tune_state.newest_snapshot(experiment) is not None

    children = store.all_children(name)
    trial_ids = [c.data.tags["aesweep.trial_id"] for c in children]
    assert len(trial_ids) == len(set(trial_ids)) == len(LRS)  # exactly one run per trial
    assert sorted(float(c.data.params["train.lr"]) for c in children) == sorted(LRS)
    assert set(tune_trials(experiment)) == set(trial_ids)  # Tune's record: the same trials
    for child in children:
        pruned = child.data.tags.get("aesweep.pruned") == "true"
        assert child.info.status == ("KILLED" if pruned else "FINISHED"), (child.info.status, child.data.tags)
        last = EPOCHS if not pruned else int(child.data.tags["aesweep.pruned_at_epoch"])
        for key in EPOCH_METRICS:
            steps = sorted(m.step for m in store.client.get_metric_history(child.info.run_id, key))
            assert steps == list(range(1, last + 1)), (key, steps)  # nothing lost, nothing logged twice
    parent = store.parent(name)
    assert parent.info.status == "FINISHED"

    # MO-ASHA's rungs: every trial that reached a rung is recorded there once, with the values it reached it
    # with; those equal the uninterrupted run's for the same trial (seeded training, checkpointed RNG).
    killed = _rung_values(store, name, experiment)
    for child in children:
        lr = float(child.data.params["train.lr"])
        reached = int(child.data.tags.get("aesweep.pruned_at_epoch", EPOCHS))
        for (other_lr, milestone) in killed:
            if other_lr == lr:
                assert milestone <= reached
        for milestone in {m for (_, m) in expected} | {m for (_, m) in killed}:
            if milestone <= reached and milestone < EPOCHS:
                assert (lr, milestone) in killed, (lr, milestone, sorted(killed))
    for key in set(killed) & set(expected):
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(killed[key], expected[key],
                                                                                  strict=True)), key
    pruned = sum(c.data.tags.get("aesweep.pruned") == "true" for c in children)
    print(f"FIGURES kill-anywhere: {len(kills)} kills, each followed by `aesweep resume` ({len(kills)} resumes); "
          f"trials ended {len(children)}/{len(LRS)} ({len(children) - pruned} finished, {pruned} pruned at a rung); MLflow runs per trial 1; "
          f"per-epoch rows duplicated 0; runs RUNNING 0; parent {parent.info.status}; rung entries "
          f"{len(killed)}, {len(set(killed) & set(expected))} equal to the uninterrupted run's")
