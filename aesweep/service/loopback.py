"""A Ray that aesweep starts on this machine stays on loopback: nothing of a local sweep is reachable from, or
talks to, the network the machine is on.

Why this takes more than ``ray.init(_node_ip_address="127.0.0.1")`` (read in Ray 2.60's code, pinned by
tests/service/test_loopback.py): ``ray._private.worker.init`` passes a given node address through
``services.resolve_ip_for_localhost``, which swaps a loopback address for ``services.get_node_ip_address()``, the
address of the machine's primary interface, unless ``ray_constants.ENABLE_RAY_CLUSTER`` is false. That constant
is read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when ``ray._private.ray_constants`` is first imported, in
every process: the driver, and the GCS, raylet, dashboard agent, runtime-env agent and workers that inherit the
driver's environment. With it false (Ray's own default on macOS and Windows, "to prevent bothersome firewall
popups") every Ray process takes 127.0.0.1 as its node address, and the agents listen there.

Only a Ray that aesweep starts itself is pinned: a driver that joins a cluster (``--address``, ``RAY_ADDRESS``)
must advertise the address the cluster reaches it on, so nothing here applies to it.
"""
from __future__ import annotations

import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"
# Ray's switch (ray._private.ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR) and the value that keeps it local.
RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
ENV = {RAY_CLUSTER_SWITCH: "0"}


def pin_environment() -> None:
    """Make every Ray process started from this one after the call take 127.0.0.1 as its node address.

    Sets the environment that Ray's subprocesses inherit, and, if this process imported Ray already, the
    constant that Ray read from it at import (``services.get_node_ip_address`` reads it on each call)."""
    os.environ.update(ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def init_kwargs() -> dict[str, Any]:
    """The ``ray.init`` arguments of a Ray started here: node and dashboard on loopback."""
    return {"_node_ip_address": LOOPBACK, "dashboard_host": LOOPBACK}


def start_head_args() -> list[str]:
    """The same for ``ray start --head`` (run with ``ENV`` in its environment)."""
    return [f"--node-ip-address={LOOPBACK}", f"--dashboard-host={LOOPBACK}"]
