"""aesweep.service.tracking against a real `mlflow server` on 127.0.0.1 that the tests stop and start: the retry that
carries a trial through an outage, which errors count as transient, and the attempt that owns a trial's run.

MLflow's own per-request retries are turned off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0) so that what carries a call
through is aesweep's retry, counted in tracking.RETRIES.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from aesweep.service import tracking
from tests.support.sockets import free_port

pytestmark = pytest.mark.slow


class Server:
    """One `mlflow server` process group on 127.0.0.1:port, over a sqlite store that outlives its restarts."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        log = (self.root / "server.log").open("a")
        self.proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db", "--artifacts-destination",
             str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5):
                    return
            except OSError:
                assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not come up in 120 s"
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        # Down means refusing connections (uvicorn's worker may linger a moment after its parent).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
            except OSError:
                return
            time.sleep(0.2)
        raise AssertionError("the server still answers")


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    s = Server(tmp_path)
    s.start()
    yield s
    s.stop()


def _parent(uri: str) -> str:
    return tracking.start_parent(uri, "tracking-test", "tracking-test", "name: tracking-test\n", {})


def test_a_call_made_during_an_outage_lands_once_the_server_is_back(server):
    c = tracking.client(server.uri)
    run = tracking.retry(lambda: c.create_run(tracking.experiment_id(server.uri, "outage")))
    before = tracking.RETRIES["transient"]
    server.stop()
    result: dict = {}

    def log() -> None:
        try:
            tracking.retry(lambda: c.log_metric(run.info.run_id, "val/mse", 0.25, step=1))
            result["ok"] = True
        except Exception as err:  # the assert below shows it
            result["error"] = err

    thread = threading.Thread(target=log)
    thread.start()
    time.sleep(6)  # several retries against a refused connection
    assert thread.is_alive(), result  # still retrying: nothing got through, nothing gave up
    server.start()
    thread.join(timeout=120)
    assert result == {"ok": True}
    assert tracking.RETRIES["transient"] - before >= 2
    history = c.get_metric_history(run.info.run_id, "val/mse")
    assert [(m.step, m.value) for m in history] == [(1, 0.25)]  # once


def test_retry_gives_up_at_its_deadline_with_the_servers_error(server, monkeypatch):
    monkeypatch.setenv(tracking.RETRY_ENV, "3")
    c = tracking.client(server.uri)
    run = tracking.retry(lambda: c.create_run(tracking.experiment_id(server.uri, "deadline")))
    server.stop()
    before = tracking.RETRIES["transient"]
    with pytest.raises(Exception) as caught:
        tracking.retry(lambda: c.log_metric(run.info.run_id, "m", 1.0))
    assert tracking._transient(caught.value)
    assert tracking.RETRIES["transient"] > before
    server.start()


def test_errors_a_later_try_cannot_fix_are_raised_at_once(server):
    c = tracking.client(server.uri)
    before = dict(tracking.RETRIES)
    with pytest.raises(Exception) as missing:
        tracking.retry(lambda: c.get_run("0" * 32))  # no such run: 404
    assert not tracking._transient(missing.value)
    exp = tracking.experiment_id(server.uri, "bad-request")
    with pytest.raises(Exception) as bad:
        tracking.retry(lambda: c.search_runs([exp], "this is not a filter"))  # 400
    assert not tracking._transient(bad.value)
    assert before == tracking.RETRIES  # neither was retried


def test_a_newer_attempt_of_a_trial_takes_its_run_over(server):
    parent = _parent(server.uri)
    first = tracking.TrialRun(server.uri, parent, "trial_00001", "ae-z4-00001", tags={})
    assert not first.resumed
    first.log_epoch({"val/mse": 0.5, "epoch": 1}, 1)
    # Ray retried the trial elsewhere (its worker looked dead): the new attempt re-attaches to the same run and
    # reads how far it got from its `epoch` metric (what the trainable logs with every epoch).
    second = tracking.TrialRun(server.uri, parent, "trial_00001", "ae-z4-00001", tags={})
    assert second.resumed and second.run_id == first.run_id and second.last_epoch == 1
    with pytest.raises(tracking.Superseded):
        first.log_epoch({"val/mse": 0.4, "epoch": 2}, 2)  # the old attempt stops before it writes
    assert second.log_epoch({"val/mse": 0.5, "epoch": 1}, 1) is False  # already held: not logged twice
    second.log_epoch({"val/mse": 0.3, "epoch": 2}, 2)
    second.end("FINISHED")
    runs = tracking.children(server.uri, parent)
    assert [r.info.run_id for r in runs] == [first.run_id]
    c = tracking.client(server.uri)
    assert [(m.step, m.value) for m in c.get_metric_history(first.run_id, "val/mse")] == [(1, 0.5), (2, 0.3)]
    assert c.get_run(first.run_id).info.status == "FINISHED"


def test_a_trial_run_that_rode_out_an_outage_says_how_many_calls_it_retried(server):
    parent = _parent(server.uri)
    run = tracking.TrialRun(server.uri, parent, "trial_00002", "ae-z4-00002", tags={})
    run.log_epoch({"val/mse": 0.5}, 1)
    server.stop()
    thread = threading.Thread(target=run.log_epoch, args=({"val/mse": 0.4}, 2))
    thread.start()
    time.sleep(4)
    server.start()
    thread.join(timeout=120)
    run.end("FINISHED")
    got = tracking.client(server.uri).get_run(run.run_id)
    assert int(got.data.tags[tracking.RETRIES_TAG]) >= 1
    assert got.info.status == "FINISHED"
    steps = [m.step for m in tracking.client(server.uri).get_metric_history(run.run_id, "val/mse")]
    assert steps == [1, 2]
