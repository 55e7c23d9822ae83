"""The sweep service end to end: real Ray Tune, real Optuna, real MLflow (sqlite) in temporary directories.

In-process sweeps share one local Ray (2 CPUs) started once for this module; the CLI tests run
``python -m aesweep`` in subprocesses: the NaN sweep joins this module's Ray with --address, the driver-fault
sweeps start a Ray of their own (what a user's `run` does), are interrupted or killed, then resumed. The
two-node cluster test lives in test_sweep_cluster.py (it needs a Ray of its own).

No timing asserts: every test asserts what ends up in MLflow and in Ray Tune's experiment state.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest
import yaml

from aesweep.service import driver, search_space, sweep_state, trainable, tune_state
from aesweep.service import trials as trials_mod
from tests.conftest import (
    EPOCH_METRICS,
    REPO,
    Store,
    cli,
    cli_background,
    descendants,
    kill_group,
    load,
    spec_data,
    tune_trials,
    wait_gone,
    write_spec,
)

pytestmark = pytest.mark.slow


def run(store: Store, path: Path, overrides: list[str] | None = None, **kwargs) -> driver.Outcome:
    spec = load(path, overrides)
    return driver.run_sweep(spec, storage=store.storage, tracking_uri=store.uri, **kwargs)


def combo(run, *keys: str) -> tuple:
    return tuple(run.data.params[k] for k in keys)


# --------------------------------------------------------------------------------------------------------------
# What a sweep writes


def test_quickstart_smoke_sweep_records_parent_children_metrics_and_artifacts(local_ray, store, tmp_path):
    path = REPO / "sweeps" / "quickstart.yaml"
    spec = load(path)
    # The CLI's --smoke, plus a second epoch so that per-epoch histories have more than one step.
    overrides = [*search_space.smoke_overrides(spec), "train.epochs=2"]
    outcome = run(store, path, overrides, max_points=2)

    assert not outcome.interrupted
    assert outcome.counts == {"finished": 2, "running": 0, "pruned": 0, "failed": 0}
    parent = store.parent("quickstart")
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["aesweep.spec_hash"] == load(path, overrides).hash
    assert tags["aesweep.spec_file"] == "quickstart.yaml"
    assert tags["aesweep.sweep"] == "quickstart"
    assert tags["aesweep.version"] and tags["aesweep.storage"] == outcome.state.experiment_path
    assert "spec/sweep.yaml" in store.artifacts(parent.info.run_id)
    logged_spec = yaml.safe_load(store.text(parent.info.run_id, "spec/sweep.yaml"))
    assert logged_spec["name"] == "quickstart" and logged_spec["train"]["epochs"] == 2

    children = store.children(parent.info.run_id)
    assert len(children) == 2
    # Smoke keeps the first two grid points: latent 8 with ae and with vae.
    assert sorted(combo(c, "model.latent_dim", "objective.variant") for c in children) == [("8", "ae"), ("8", "vae")]
    for child in children:
        rid = child.info.run_id
        assert child.info.status == "FINISHED", child.data.tags.get("aesweep.failure")
        assert child.data.tags["aesweep.trial_id"] and child.data.tags["aesweep.node"]
        params = child.data.params
        assert params["model.backbone"] == "conv" and params["dataset.name"] == "shapes"
        assert params["train.epochs"] == "2" and params["dataset.train_size"] == "300"
        for key in EPOCH_METRICS:
            assert store.steps(rid, key) == [1, 2], key
        metrics = child.data.metrics
        for key in ("test/mse", "test/ssim", "test/psnr", "probe/knn/acc", "probe/logreg/acc",
                    "cluster/kmeans/ari", "time/total_s"):
            assert math.isfinite(metrics[key]), key
        if params["objective.variant"] == "vae":
            assert store.steps(rid, "loss/kl") == [1, 2] and params["objective.beta"] == "1.0"
        else:
            assert "objective.beta" not in params
        artifacts = store.artifacts(rid)
        assert {"figures/reconstructions.png", "model/state_dict.pt", "spec/trial.yaml"} <= set(artifacts)
        trial_yaml = yaml.safe_load(store.text(rid, "spec/trial.yaml"))
        assert trial_yaml["objective"]["variant"] == params["objective.variant"]

    # trial_table and `status` read the same record back, without Ray.
    table = trials_mod.trial_table(sweep_state.SweepState.load(outcome.state.experiment_path))
    assert [t["status"] for t in table] == ["finished", "finished"]
    shown = cli("status", outcome.state.experiment_path)
    assert shown.returncode == 0, shown.stderr
    for row in table:
        assert row["trial_id"] in shown.stdout
    assert "2 finished" in shown.stdout and "best val/loss" in shown.stdout


def test_run_with_a_bad_spec_exits_2_before_starting_ray(tmp_path, monkeypatch):
    import ray
    from typer.testing import CliRunner

    from aesweep.cli import app

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init was called for a bad spec")

    monkeypatch.setattr(ray, "init", no_ray)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec_data("bad", model={"latent_dimm": 4}, train={"epochs": 0})))
    result = CliRunner().invoke(app, ["run", str(path), "--storage", str(tmp_path / "results"),
                                      "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert result.exit_code == 2, result.output
    assert "model.latent_dimm: unknown key" in result.output and "train.epochs" in result.output
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------------------------------------------
# Search: conditional space, grid


def _restore_optuna(experiment_path: str):
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(experiment_path)
    return searcher._ot_study


def test_tpe_samples_each_variant_knob_only_for_its_variant(local_ray, store, tmp_path):
    path = write_spec(
        tmp_path, "conditional",
        objective={"variant": {"choice": ["ae", "sparse", "vae"]},
                   "sparse": {"sparsity": {"loguniform": [1.0e-5, 1.0e-2]}},
                   "vae": {"beta": {"loguniform": [1.0e-3, 4.0]}}},
        search={"algorithm": "tpe", "num_samples": 6, "max_concurrent": 2},
        eval={"metrics": ["mse"], "probes": [], "figures": []},
    )
    outcome = run(store, path)
    assert outcome.counts["finished"] == 6

    study = _restore_optuna(outcome.state.experiment_path)
    assert len(study.trials) == 6
    seen = set()
    for ot_trial in study.trials:
        params = ot_trial.params
        variant = params["objective.variant"]
        seen.add(variant)
        assert ("objective.vae.beta" in params) == (variant == "vae"), params
        assert ("objective.sparse.sparsity" in params) == (variant == "sparse"), params
        assert set(params) <= {"objective.variant", "objective.vae.beta", "objective.sparse.sparsity"}
        assert ot_trial.state.name == "COMPLETE" and math.isfinite(ot_trial.value)
    assert len(seen) >= 2  # 6 draws over 3 variants: the conditional branches were really exercised

    # MLflow agrees: each child holds exactly its variant's knob, with the value Optuna proposed.
    children = store.children(outcome.state.parent_run_id)
    assert len(children) == 6
    proposed = sorted((t.params["objective.variant"], t.params.get("objective.vae.beta"),
                       t.params.get("objective.sparse.sparsity")) for t in study.trials)
    logged = sorted((c.data.params["objective.variant"],
                     float(c.data.params["objective.beta"]) if "objective.beta" in c.data.params else None,
                     float(c.data.params["objective.sparsity"]) if "objective.sparsity" in c.data.params else None)
                    for c in children)
    assert logged == proposed


def test_grid_runs_exactly_the_product(local_ray, store, tmp_path):
    path = write_spec(tmp_path, "grid", model={"latent_dim": {"grid": [4, 8]}},
                      objective={"variant": {"grid": ["ae", "vae"]}},
                      search={"algorithm": "grid", "max_concurrent": 2},
                      eval={"metrics": ["mse"], "probes": [], "figures": []})
    outcome = run(store, path)
    children = store.children(outcome.state.parent_run_id)
    combos = sorted(combo(c, "model.latent_dim", "objective.variant") for c in children)
    assert combos == [("4", "ae"), ("4", "vae"), ("8", "ae"), ("8", "vae")]
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["aesweep.trial_id"] for c in children}) == 4
    assert outcome.counts == {"finished": 4, "running": 0, "pruned": 0, "failed": 0}


# --------------------------------------------------------------------------------------------------------------
# Trials that end early: pruned by ASHA, failed on a NaN


def test_asha_prunes_the_hopeless_trial(local_ray, store, tmp_path):
    # One trial at a time: the good learning rate sets every rung first; the near-zero one is then worse than
    # the rung's cutoff at its first epoch (grace 1) and stopped there.
    path = write_spec(tmp_path, "asha", train={"epochs": 4, "lr": {"grid": [3.0e-3, 1.0e-7]}},
                      search={"algorithm": "grid", "max_concurrent": 1,
                              "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2,
                                            "metric": "val/loss", "mode": "min"}},
                      eval={"metrics": ["mse"], "probes": [], "figures": []})
    outcome = run(store, path)
    by_lr = {float(c.data.params["train.lr"]): c for c in store.children(outcome.state.parent_run_id)}
    assert sorted(by_lr) == [1.0e-7, 3.0e-3]
    good, hopeless = by_lr[3.0e-3], by_lr[1.0e-7]
    assert good.info.status == "FINISHED" and "aesweep.pruned" not in good.data.tags
    assert store.steps(good.info.run_id, "val/loss") == [1, 2, 3, 4]
    assert "test/mse" in good.data.metrics
    assert hopeless.info.status == "KILLED" and hopeless.data.tags["aesweep.pruned"] == "true"
    assert store.steps(hopeless.info.run_id, "val/loss") == [1]  # stopped at the first rung
    assert "test/mse" not in hopeless.data.metrics  # no final evaluation for a pruned trial
    assert outcome.counts == {"finished": 1, "running": 0, "pruned": 1, "failed": 0}


def test_nan_trial_fails_with_its_reason_and_the_sweep_goes_on(local_ray, store, tmp_path):
    path = write_spec(tmp_path, "nan", objective={"variant": "vae"},
                      train={"epochs": 2, "lr": {"grid": [1.0e-3, 1.0e12]}},
                      search={"algorithm": "grid", "max_concurrent": 2},
                      eval={"metrics": ["mse"], "probes": [], "figures": []})
    # The CLI joins this module's Ray as a cluster (--address): the path of a sweep on a cluster, minus the
    # seconds a Ray of its own would take to start.
    address = local_ray.get_runtime_context().gcs_address
    done = cli("run", str(path), "--storage", store.storage, "--tracking-uri", store.uri, "--address", address)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 trial(s) failed" in done.stdout
    assert "1 finished, 1 failed" in done.stdout

    parent = store.parent("nan")
    assert parent.info.status == "FINISHED"
    by_lr = {float(c.data.params["train.lr"]): c for c in store.children(parent.info.run_id)}
    sane, nan = by_lr[1.0e-3], by_lr[1.0e12]
    assert sane.info.status == "FINISHED" and "aesweep.failure" not in sane.data.tags
    assert nan.info.status == "FAILED"
    assert "non-finite" in nan.data.tags["aesweep.failure"]
    assert "test/mse" not in nan.data.metrics
    # A NaN is a result, not a crash: Ray does not retry it (it would NaN again).
    state = sweep_state.SweepState.load("nan", store.storage)
    trials = tune_trials(state.experiment_path)
    assert [t.run_metadata.num_failures for t in trials.values()] == [0, 0]
    assert trials[nan.data.tags["aesweep.trial_id"]].last_result[trainable.FAILED] == 1.0
    rows = trials_mod.trial_table(state)
    assert sorted(r["status"] for r in rows) == ["failed", "finished"]
    assert "non-finite" in next(r["reason"] for r in rows if r["status"] == "failed")


def test_trial_that_raises_is_failed_with_the_exception_and_the_sweep_goes_on(local_ray, store, tmp_path):
    # MNIST without its files and with downloads off: the worker's dataset load raises. That error is
    # deterministic, so it is recorded as the trial's failure and not retried, even with max_failures 2.
    (tmp_path / "empty").mkdir()
    path = write_spec(tmp_path, "raises",
                      dataset={"name": {"grid": ["shapes", "mnist"]}, "root": str(tmp_path / "empty"),
                               "download": False},
                      search={"algorithm": "grid", "max_concurrent": 2, "max_failures": 2},
                      eval={"metrics": ["mse"], "probes": [], "figures": []})
    outcome = run(store, path)
    by_name = {c.data.params["dataset.name"]: c for c in store.children(outcome.state.parent_run_id)}
    assert by_name["shapes"].info.status == "FINISHED"
    broken = by_name["mnist"]
    assert broken.info.status == "FAILED"
    assert "DataError" in broken.data.tags["aesweep.failure"] and "not found" in broken.data.tags["aesweep.failure"]
    assert outcome.counts == {"finished": 1, "running": 0, "pruned": 0, "failed": 1}
    tune_trial = tune_trials(outcome.state.experiment_path)[broken.data.tags["aesweep.trial_id"]]
    assert tune_trial.status == "TERMINATED" and tune_trial.num_failures == 0  # ran once, not retried


def test_trial_killed_by_rays_memory_monitor_is_failed_and_the_sweep_goes_on(store, tmp_path):
    # The monitor's threshold at 1% of the machine's memory, below what Ray's own processes use: it kills the
    # trial's worker as soon as it runs, every time, whatever else runs beside the test (Ray 2.60's Tune used to
    # end the whole sweep with "Caught unexpected exception" on such a kill).
    threshold = 0.01
    path = write_spec(tmp_path, "memkill", train={"epochs": 200}, search={"max_failures": 1},
                      eval={"metrics": ["mse"], "probes": [], "figures": []})
    result = cli("run", str(path), "--storage", store.storage, "--tracking-uri", store.uri, timeout=400,
                 env={"RAY_memory_usage_threshold": str(threshold), "RAY_memory_monitor_refresh_ms": "100"})
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Caught unexpected exception" not in output, output
    (run,) = store.children(store.parent("memkill").info.run_id)
    assert run.info.status == "FAILED", output
    assert "memory monitor" in run.data.tags["aesweep.failure"], run.data.tags
    (trial,) = tune_trials(sweep_state.SweepState.load("memkill", store.storage).experiment_path).values()
    assert trial.status == "ERROR" and trial.run_metadata.num_failures == 2  # tried, retried once, then failed


# --------------------------------------------------------------------------------------------------------------
# Many writers on one sqlite store


def test_eight_concurrent_trials_lose_no_metric_row(local_ray, store, tmp_path):
    epochs = 2
    path = write_spec(tmp_path, "crowd", model={"latent_dim": {"grid": [2, 3, 4, 5]}},
                      objective={"variant": {"grid": ["ae", "sparse"]}},
                      train={"epochs": epochs},
                      search={"algorithm": "grid", "max_concurrent": 8},
                      eval={"metrics": ["mse"], "probes": [], "figures": []},
                      resources={"cpu": 0.25})
    outcome = run(store, path)
    children = store.children(outcome.state.parent_run_id)
    assert len(children) == 8
    assert len({c.data.tags["aesweep.pid"] for c in children}) > 1  # really several processes at once
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("aesweep.failure")
        for key in EPOCH_METRICS:
            assert store.steps(child.info.run_id, key) == list(range(1, epochs + 1)), key
        for key in ("test/mse", "time/total_s"):
            assert len(store.client.get_metric_history(child.info.run_id, key)) == 1, key
        assert len(child.data.params) > 30
    assert outcome.counts == {"finished": 8, "running": 0, "pruned": 0, "failed": 0}


# --------------------------------------------------------------------------------------------------------------
# Faults: a worker killed mid-epoch; the driver interrupted or killed, then resumed

# Epochs of about a second: long enough to land a kill inside one.
SLOW = {"dataset": {"train_size": 1200}, "model": {"backbone": "conv", "width": 0.25, "latent_dim": 8},
        "eval": {"metrics": ["mse"], "probes": [], "figures": []}}


def test_worker_killed_mid_epoch_resumes_from_its_checkpoint(local_ray, store, tmp_path):
    epochs = 5
    path = write_spec(tmp_path, "workerfault", **{**SLOW, "train": {"epochs": epochs},
                                                   "model": {**SLOW["model"], "latent_dim": {"grid": [8, 16]}},
                                                   "search": {"algorithm": "grid", "max_concurrent": 2,
                                                              "max_failures": 2}})
    result: dict[str, object] = {}

    def sweep_thread():
        try:
            result["outcome"] = run(store, path)
        except BaseException as err:  # surfaced by the assertion below
            result["error"] = err

    thread = threading.Thread(target=sweep_thread, daemon=True)
    thread.start()

    # Epoch 2 in MLflow: the trial has handed epoch 1's checkpoint to Tune (it logs an epoch to MLflow before it
    # reports that epoch's checkpoint, so a kill right after epoch 1 appears could find none to resume from).
    def victim(children):
        return next((c for c in children if c.info.status == "RUNNING" and c.data.metrics.get("epoch", 0) >= 2
                     and c.data.metrics.get("epoch", 0) < epochs), None)

    target = store.wait_for("workerfault", victim)
    killed_pid = int(target.data.tags["aesweep.pid"])
    os.kill(killed_pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in result, result.get("error")

    children = {c.info.run_id: c for c in store.children(target.data.tags["mlflow.parentRunId"])}
    assert len(children) == 2  # the retried trial re-attached to its run, no duplicate
    retried = children[target.info.run_id]
    assert retried.info.status == "FINISHED", retried.data.tags.get("aesweep.failure")
    assert int(retried.data.tags["aesweep.pid"]) != killed_pid  # it finished in another process
    assert int(retried.data.tags["aesweep.resumed_from_epoch"]) >= 1  # from its checkpoint, not from scratch
    for key in EPOCH_METRICS:
        assert store.steps(retried.info.run_id, key) == list(range(1, epochs + 1)), key  # each epoch once
    assert len(store.client.get_metric_history(retried.info.run_id, "test/mse")) == 1
    assert all(c.info.status == "FINISHED" for c in children.values())
    outcome = result["outcome"]
    assert outcome.counts["finished"] == 2 and not outcome.interrupted
    trials = tune_trials(outcome.state.experiment_path)
    assert trials[retried.data.tags["aesweep.trial_id"]].run_metadata.num_failures == 1  # Ray saw the death


# The processes of a local Ray that must never outlive its driver.
RAY_CORE = ("raylet", "gcs_server", "ray::ImplicitFunc", "ray::IDLE")


def _snapshot(store: Store, name: str) -> dict[str, dict]:
    """The sweep's child runs by trial id; two runs for one trial is a failure in itself."""
    runs = store.all_children(name)
    ids = [c.data.tags["aesweep.trial_id"] for c in runs]
    assert len(ids) == len(set(ids)), sorted(ids)
    return dict(zip(ids, runs, strict=True))


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_driver_interrupted_or_killed_then_resumed_accounts_for_every_trial_once(how, store, tmp_path):
    name = f"driver-{how}"
    points = 2
    # One trial at a time: when the driver goes, one trial is mid-way and the other not started yet.
    path = write_spec(tmp_path, name, **{**SLOW, "dataset": {"train_size": 600}, "train": {"epochs": 4},
                                         "model": {**SLOW["model"], "latent_dim": {"grid": [4, 8, 16][:points]}},
                                         "search": {"algorithm": "grid", "max_concurrent": 1}})
    log = tmp_path / "run.log"
    proc = cli_background("run", str(path), "--storage", store.storage, "--tracking-uri", store.uri, log=log)
    try:
        store.wait_for(name, lambda ch: any(c.data.metrics.get("epoch", 0) >= 1 for c in ch), proc=proc)
        ray_procs = descendants(proc.pid)  # its local Ray: gcs, raylet, agents, trial workers
        assert any("raylet" in p["cmd"] for p in ray_procs.values())
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
            output = log.read_text()
            assert code == 130, output
            assert "interrupted" in output and f"python -m aesweep resume {store.storage}/{name}" in output, output
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        # Its Ray goes with it: gcs, raylet and trial workers share the driver's fate (after an interrupt
        # the CLI shuts its Ray down; after SIGKILL the kernel kills gcs and raylet, and workers follow the
        # raylet).
        left = wait_gone(ray_procs, lambda p: any(k in p["cmd"] for k in RAY_CORE), timeout=30)
        assert not [p for p in left.values() if any(k in p["cmd"] for k in RAY_CORE)], left
        if how == "sigint":
            assert not wait_gone(ray_procs, timeout=10), "a clean exit leaves no Ray process behind"
    finally:
        kill_group(proc)
    # After SIGKILL, Ray's per-node agents (dashboard agent, runtime-env agent) outlive the cluster, waiting
    # on a GCS that is gone; they are in the CLI's process group and were reaped just above. Nothing else of
    # that Ray may be left to get in the way of the resume below or of later tests.
    assert not wait_gone(ray_procs, timeout=10)

    before = _snapshot(store, name)
    assert 1 <= len(before) <= points
    # It really was cut short: a trial not started yet, or one not finished.
    assert len(before) < points or any(c.info.status != "FINISHED" for c in before.values())
    state_path = Path(store.storage) / name
    parent = store.client.get_run(json.loads((state_path / sweep_state.STATE_FILE).read_text())["parent_run_id"])
    assert parent.info.status == ("KILLED" if how == "sigint" else "RUNNING")

    resumed = cli("resume", str(state_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    after = _snapshot(store, name)
    assert len(after) == points  # one child run per trial, no duplicates, nothing beyond the grid
    assert set(before) <= set(after)  # the trials from before kept their ids (and their runs)
    trials = tune_trials(state_path)  # Ray Tune's record agrees: the same trials, each done once
    assert set(trials) == set(after)
    assert all(t.status == "TERMINATED" and t.last_result.get(trainable.DONE) for t in trials.values())
    for trial_id, child in before.items():
        assert after[trial_id].info.run_id == child.info.run_id
    combos = sorted(int(c.data.params["model.latent_dim"]) for c in after.values())
    assert combos == [4, 8, 16][:points]
    for child in after.values():
        assert child.info.status == "FINISHED", (child.info.status, child.data.tags.get("aesweep.failure"))
        for key in EPOCH_METRICS:
            assert store.steps(child.info.run_id, key) == [1, 2, 3, 4], key
    assert store.client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert f"{points} finished" in resumed.stdout


def test_storage_given_as_a_uri_holds_tune_state_and_the_sweep_record(local_ray, store, tmp_path):
    # s3:// and gs:// go through the same pyarrow filesystems as file://, which is what runs here.
    path = write_spec(tmp_path, "uristore", model={"latent_dim": {"grid": [2, 3]}})
    root = f"file://{tmp_path}/remote"
    outcome = driver.run_sweep(load(path), storage=root, tracking_uri=store.uri)
    assert outcome.counts["finished"] == 2
    assert outcome.state.experiment_path == f"{root}/uristore"
    record = json.loads((tmp_path / "remote" / "uristore" / "aesweep.json").read_text())
    assert record["parent_run_id"] == outcome.state.parent_run_id
    assert sweep_state.SweepState.load("uristore", storage=root).parent_run_id == outcome.state.parent_run_id
    assert len(tune_trials(f"{tmp_path}/remote/uristore")) == 2  # Tune's own experiment state is there too
    shown = cli("status", f"{root}/uristore")
    assert shown.returncode == 0 and "2 finished" in shown.stdout, shown.stderr
    again = cli("run", str(path), "--storage", root, "--tracking-uri", store.uri)
    assert again.returncode == 2 and "already ran there" in again.stderr


def test_a_gpu_request_on_a_local_machine_without_gpu_runs_on_the_cpu(local_ray, store, tmp_path):
    # The shipped study sweeps ask for GPU fractions; on a laptop they must run, not wait forever for a GPU.
    import ray

    path = write_spec(tmp_path, "gpuask", resources={"cpu": 1, "gpu": 0.25})
    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU: the request is honoured")
    with pytest.warns(UserWarning, match="no GPU: trials run on the CPU"):
        outcome = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri)
    assert outcome.counts["finished"] == 1


def test_nsga2_searcher_pickles_for_its_checkpoint(tmp_path):
    """Ray Tune pickles the searcher into the sweep's checkpoint (what resume restores); Optuna 5's NSGA-II sampler
    holds a lock that plain pickling refuses."""
    import pickle

    from aesweep.service import driver

    spec = load(write_spec(tmp_path, "nsga", search={"algorithm": "nsga2", "num_samples": 4,
                                                     "metrics": {"val/loss": "min", "val/mse": "min"}},
                           model={"latent_dim": {"choice": [2, 4]}}))
    searcher, _, _ = driver._search(spec)
    restored = pickle.loads(pickle.dumps(searcher))
    assert type(restored._sampler).__name__ == "PicklableNSGAIISampler"


def test_torn_tune_state_is_set_aside_and_the_newest_intact_one_kept(tmp_path):
    import ray.cloudpickle as pickle

    # Names as Tune writes them (session timestamps; it restores the greatest name of each kind).
    old_cb, new_cb = "callback-states-2026-12-01_10-00-00.pkl", "callback-states-2026-12-02_10-00-00.pkl"
    (tmp_path / old_cb).write_bytes(pickle.dumps({0: {"scheduler": None}}))
    (tmp_path / new_cb).write_bytes(pickle.dumps({0: {"scheduler": {"kind": "x"}}})[:7])
    newer_cb = "callback-states-2026-12-03_10-00-00.pkl"  # torn too: no line may name it as the one used
    (tmp_path / newer_cb).write_bytes(b"\x80")
    (tmp_path / "experiment_state-2026-12-02_10-00-00.json").write_text(json.dumps({"trial_data": []}))
    (tmp_path / "searcher-state-2026-12-02_10-00-00.pkl").write_bytes(b"")  # cut before any byte landed
    lines = tune_state.set_aside_torn_state(tmp_path)
    assert sorted(p.name for p in (tmp_path / "torn").iterdir()) == sorted(
        [new_cb, newer_cb, "searcher-state-2026-12-02_10-00-00.pkl"])
    assert (tmp_path / old_cb).exists() and (tmp_path / "experiment_state-2026-12-02_10-00-00.json").exists()
    assert len(lines) == 3
    assert lines[0].startswith(f"{new_cb} was cut short by the crash") and lines[0].endswith(f"the resume uses {old_cb}")
    assert lines[1].startswith(f"{newer_cb} was cut short") and lines[1].endswith(f"the resume uses {old_cb}")
    assert lines[2].endswith("no intact copy is left: Tune starts that part afresh")
    assert tune_state.set_aside_torn_state(tmp_path) == []  # nothing torn is left
    assert tune_state.set_aside_torn_state("s3://bucket/sweep") == []


def test_a_checkpoint_deleted_before_the_state_was_saved_is_replaced_by_the_newer_one(local_ray, store, tmp_path):
    path = write_spec(tmp_path, "dangling", train={"epochs": 3}, model={"latent_dim": {"grid": [2, 3]}},
                      eval={"metrics": ["mse"], "probes": [], "figures": []})
    outcome = run(store, path)
    experiment = Path(outcome.state.experiment_path)
    before = {t.trial_id: Path(t.checkpoint.path) for t in tune_trials(experiment).values()}
    victim, intact = sorted(before)
    # The crash of the on-prem test: Tune registered the next checkpoint and deleted the one its saved state
    # still names.
    recorded = before[victim]
    newer = recorded.with_name(f"checkpoint_{int(recorded.name.split('_')[-1]) + 1:06d}")
    recorded.rename(newer)
    lines = tune_state.repair_dangling_checkpoints(experiment)
    assert lines == [f"{recorded.parent.name}: its recorded checkpoint {recorded.name} was deleted before the "
                     f"crash saved the experiment state; the resume continues it from {newer.name}"]
    after = {t.trial_id: Path(t.checkpoint.path) for t in tune_trials(experiment).values()}  # Tune's own reader
    assert after == {victim: newer, intact: before[intact]}
    assert tune_state.repair_dangling_checkpoints(experiment) == []  # nothing left to repair
