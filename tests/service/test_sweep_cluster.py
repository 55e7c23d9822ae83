"""A sweep on a two-node Ray cluster on this machine (real raylets on loopback, ``ray.cluster_utils.Cluster``).

Trials spread over both nodes; when a node goes away mid-trial, its trial is retried on the other node from its
last checkpoint and finishes there, in the same MLflow run. Ray Tune's storage_path must be shared by the nodes:
on one machine a local temporary directory is.

This module starts its own Ray (the head and a worker node), so it must not share a process-wide Ray with
test_sweep.py: that module's Ray is shut down when its tests end, before this one starts.
"""
from __future__ import annotations

import logging
import threading

import pytest

from aesweep.service import driver, loopback
from tests.conftest import EPOCH_METRICS, load, tune_trials, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                          "node_ip_address": loopback.LOOPBACK})
    ray.init(address=c.address, logging_level=logging.WARNING, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def test_trials_use_both_nodes_and_survive_losing_one(cluster, store, tmp_path):
    import ray

    worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    head_id, worker_id = cluster.head_node.node_id, worker_node.node_id

    epochs = 4
    path = write_spec(tmp_path, "twonodes", dataset={"train_size": 1200},
                      model={"backbone": "conv", "width": 0.25, "latent_dim": {"grid": [4, 8]}},
                      train={"epochs": epochs}, eval={"metrics": ["mse"], "probes": [], "figures": []},
                      search={"algorithm": "grid", "max_concurrent": 2, "max_failures": 2},
                      resources={"cpu": 1})  # one trial per node
    result: dict[str, object] = {}

    def sweep_thread():
        try:
            result["outcome"] = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri)
        except BaseException as err:  # surfaced by the assertion below
            result["error"] = err

    thread = threading.Thread(target=sweep_thread, daemon=True)
    thread.start()

    def both_nodes_and_one_epoch_on_the_worker(children):
        nodes = {c.data.tags.get("aesweep.node") for c in children}
        on_worker = [c for c in children if c.data.tags.get("aesweep.node") == worker_id
                     and 1 <= c.data.metrics.get("epoch", 0) < epochs]
        return (nodes, on_worker[0]) if nodes == {head_id, worker_id} and on_worker else None

    nodes, victim = store.wait_for("twonodes", both_nodes_and_one_epoch_on_the_worker)
    assert nodes == {head_id, worker_id}  # the two trials ran on the two nodes
    cluster.remove_node(worker_node)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in result, result.get("error")

    children = {c.info.run_id: c for c in store.children(victim.data.tags["mlflow.parentRunId"])}
    assert len(children) == 2  # the moved trial kept its MLflow run
    moved = children[victim.info.run_id]
    assert moved.info.status == "FINISHED", moved.data.tags.get("aesweep.failure")
    assert moved.data.tags["aesweep.node"] == head_id  # finished on the surviving node
    assert int(moved.data.tags["aesweep.resumed_from_epoch"]) >= 1  # from its checkpoint
    for key in EPOCH_METRICS:
        assert store.steps(moved.info.run_id, key) == list(range(1, epochs + 1)), key
    assert all(c.info.status == "FINISHED" for c in children.values())
    outcome = result["outcome"]
    assert outcome.counts["finished"] == 2
    trials = tune_trials(outcome.state.experiment_path)
    assert trials[moved.data.tags["aesweep.trial_id"]].run_metadata.num_failures == 1  # lost with its node
