"""A local sweep never leaves loopback: no socket of its process tree talks to, or listens on, an address of
the machine's network interfaces (aesweep.service.loopback says how, tests/support/sockets.py how it is seen).

Measured on a6dd76d (before the pin; `python tests/support/sockets.py -- python -m aesweep run sweeps/quickstart.yaml
--smoke`): 9 processes connected to the machine's primary address, 2 listeners on it (the dashboard agent and
the runtime-env agent) and 14 on the wildcard address (GCS, raylet, every worker's gRPC server).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from aesweep.service import loopback
from tests.conftest import REPO, cli_env
from tests.support import sockets
from tests.support.sockets import free_port

pytestmark = pytest.mark.slow


def _unpinned_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: without the pin conftest gives the suite, so that the CLI must pin
    its own Ray."""
    env = cli_env(extra)
    env.pop(loopback.RAY_CLUSTER_SWITCH, None)
    return env


def _resolved(env: dict[str, str]) -> str:
    code = "import ray._private.services as s; print(s.resolve_ip_for_localhost('127.0.0.1'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=True).stdout.strip()


def test_rays_loopback_rule_is_the_one_aesweep_relies_on():
    """Pins Ray's code that aesweep.service.loopback works around: a loopback node address is swapped for the primary
    address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was in the environment when Ray was imported."""
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == loopback.RAY_CLUSTER_SWITCH
    assert _resolved(cli_env(loopback.ENV)) == loopback.LOOPBACK
    unpinned = _resolved(_unpinned_env())
    if unpinned == loopback.LOOPBACK:
        pytest.skip("this machine has no network address but loopback: nothing to swap")
    assert not sockets.is_loopback(unpinned)


def test_a_local_sweep_never_leaves_loopback(tmp_path):
    """The quick-start as a user runs it (smoke-sized), its sockets sampled every 0.2 s from start to end."""
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aesweep", "run", "sweeps/quickstart.yaml", "--smoke", "--storage",
             str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=_unpinned_env(), start_new_session=True)
        seen = sockets.watch(proc, timeout=400)
        proc.wait(timeout=60)
    print(seen.summary())
    assert proc.returncode == 0, log.read_text()[-3000:]
    # The samples saw the sweep at work: Ray's servers and a trial's worker, each with sockets.
    names = " ".join(sorted(seen.processes))
    assert "gcs_server" in names and "raylet" in names and "ImplicitFunc" in names, names
    assert len(seen.listeners) >= 5 and seen.connections
    assert seen.off_loopback_connections() == []
    assert seen.off_loopback_listeners() == []
    assert seen.wildcard_listeners() == []


def test_mlflow_ui_as_the_run_prints_it_listens_on_loopback_only(tmp_path):
    """`mlflow ui --backend-store-uri URI` (the line `aesweep run` prints), on a free port: its server processes
    listen on 127.0.0.1 only and answer there."""
    port = free_port()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen([mlflow, "ui", "--backend-store-uri", uri, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=_unpinned_env(),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "mlflow ui exited"
                assert time.monotonic() < deadline, "mlflow ui did not answer in 120 s"
                time.sleep(0.5)
        seen = sockets.Seen()
        for _ in range(5):
            sockets.sample(sockets.psutil.Process(proc.pid), seen)
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    print(seen.summary())
    ports = {entry[2] for entry in seen.listeners}
    assert port in ports
    assert seen.off_loopback_listeners() == [] and seen.wildcard_listeners() == []
    assert seen.off_loopback_connections() == []

