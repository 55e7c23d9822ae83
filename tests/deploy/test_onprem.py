"""cluster-onprem.yaml for real: `ray up` over SSH onto three hosts (network namespaces with their own sshd: see
tests/support/onprem_lab.py), sweeps submitted as Ray Jobs from a fourth (the laptop), faults across hosts, `ray down`.

One cluster for the module (bringing it up costs about a minute). Each fault test runs its own small sweep and
asserts the four figures of issue 15: trials finished N/N, MLflow runs per trial exactly 1, per-epoch rows
duplicated 0, runs left RUNNING 0 (printed as a FIGURES line; `pytest -s` shows them).

Needs root, iproute2, openssh-server, openssh-client and rsync (CI's apt-get line installs them); skipped with the
missing piece named otherwise.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, spec_data
from tests.support.onprem_lab import Lab, missing_tools

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(missing_tools()), reason=f"the on-prem lab needs {', '.join(missing_tools())}")]

ONPREM = REPO / "cluster-onprem.yaml"
WORKERS = ("w1", "w2")
EPOCH_KEYS = ("train/loss", "val/loss", "epoch")


# --------------------------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.head = lab.hosts["head"]
        self.config = lab.hosts["laptop"].home / "cluster-onprem.yaml"
        self.dashboard = f"http://{self.head.ip}:8265"
        self.mlflow = f"http://{self.head.ip}:5000"
        self.storage = str(lab.root / "shared" / "results")  # the lab's NFS: the same path on every host
        self.token = secrets.token_hex(32)
        self.user, self.password = "aesweep-admin", secrets.token_urlsafe(24)

    def write_laptop_files(self) -> None:
        home = self.lab.hosts["laptop"].home
        (home / ".ray").mkdir()
        (home / ".ray" / "auth_token").write_text(self.token)
        for path in (home / ".aesweep" / "mlflow-credentials", home / ".mlflow" / "credentials"):
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_text(f"[mlflow]\nmlflow_tracking_username = {self.user}\n"
                            f"mlflow_tracking_password = {self.password}\n")
            path.chmod(0o600)
        # The file as a user fills it in (docs/cluster.md): addresses, user, key, environment.
        text = ONPREM.read_text()
        w1, w2 = (self.lab.hosts[w].ip for w in WORKERS)
        for placeholder, value in (("YOUR_HEAD_IP", self.head.ip), ("YOUR_WORKER_IP_1", w1),
                                   ("YOUR_WORKER_IP_2", w2), ("YOUR_USER", "root"),
                                   ("~/.ssh/aesweep-lab", str(self.lab.key)),
                                   ("YOUR_ENV", str(Path(os.sys.prefix)))):
            text = text.replace(placeholder, value)
        assert "YOUR_" not in yaml.safe_dump(yaml.safe_load(text))  # comments may keep theirs
        self.config.write_text(text)
        # This machine's share of a lab: a worker is 1 CPU and every node's object store small (2 cores and
        # 24 GiB shared by several hosts); MLflow with one server process. A real machine needs none of this.
        small = '{"object_store_memory": 150000000}'
        for name in ("head", *WORKERS):
            res = small if name == "head" else '{"CPU": 1, "object_store_memory": 150000000}'
            (self.lab.hosts[name].home / ".bashrc").write_text(
                f"export RAY_OVERRIDE_RESOURCES='{res}'\nexport MLFLOW_WORKERS=1\n")

    def ray(self, *args: str, timeout: float = 600) -> str:
        result = self.lab.on_laptop(str(Path(os.sys.executable).parent / "ray"), *args, timeout=timeout, cwd=REPO)
        return result.stdout + result.stderr

    def aesweep(self, *args: str, timeout: float = 300, check: bool = True):
        return self.lab.on_laptop(os.sys.executable, "-m", "aesweep", *args, timeout=timeout, cwd=REPO,
                                  check=check)

    # Reads from the laptop (its network namespace), with the token / the MLflow credentials.

    def nodes(self) -> list[dict[str, Any]]:
        import requests

        def get():
            r = requests.get(f"{self.dashboard}/nodes?view=summary",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
            r.raise_for_status()
            return r.json()["data"]["summary"]

        return self.lab.laptop_call(get)

    def alive_nodes(self) -> dict[str, dict[str, Any]]:
        """ip -> {node_id, cpu}, for the alive nodes."""
        out = {}
        for node in self.nodes():
            raylet = node.get("raylet", {})
            if raylet.get("state") == "ALIVE":
                out[node["ip"]] = {"node_id": raylet["nodeId"],
                                   "cpu": raylet.get("resourcesTotal", {}).get("CPU", 0.0)}
        return out

    def wait_workers(self, timeout: float = 300) -> dict[str, dict[str, Any]]:
        wanted = {self.lab.hosts[w].ip for w in WORKERS} | {self.head.ip}
        deadline = time.monotonic() + timeout
        while True:
            try:
                alive = self.alive_nodes()
            except Exception:  # the dashboard not up yet
                alive = {}
            if set(alive) >= wanted:
                return alive
            assert time.monotonic() < deadline, f"alive: {alive}"
            time.sleep(2)

    def wait_mlflow(self, timeout: float = 180) -> float:
        """Block until the head's MLflow server answers HTTP from the laptop (any status: it asks for the password);
        seconds waited. `ray up` returns once Ray is up; the server it started in the background may still be
        creating its tables, for longer on a loaded machine (a fresh-clone run once found it refusing connections)."""
        import requests

        started = time.monotonic()
        while True:
            try:
                self.lab.laptop_call(lambda: requests.get(f"{self.mlflow}/health", timeout=5))
                return time.monotonic() - started
            except (requests.ConnectionError, requests.Timeout):
                assert time.monotonic() - started < timeout, f"MLflow on the head not answering after {timeout} s"
                time.sleep(1)

    def mlflow_call(self, fn):
        def call():
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = self.user, self.password
            try:
                from mlflow import MlflowClient

                return fn(MlflowClient(tracking_uri=self.mlflow))
            finally:
                os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
                os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)

        return self.lab.laptop_call(call)

    def figures(self, name: str) -> dict[str, Any]:
        """The issue's figures for the sweep ``name``, read from the head's MLflow server."""
        from mlflow.entities import ViewType

        def read(c):
            exp = c.get_experiment_by_name(name)
            runs = c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
            parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
            children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
            active = [r for r in children if r.info.lifecycle_stage == "active"]
            per_trial: dict[str, int] = {}
            for r in active:
                per_trial[r.data.tags["aesweep.trial_id"]] = per_trial.get(r.data.tags["aesweep.trial_id"], 0) + 1
            duplicates, steps = 0, {}
            for r in active:
                for key in EPOCH_KEYS:
                    seen = [m.step for m in c.get_metric_history(r.info.run_id, key)]
                    duplicates += len(seen) - len(set(seen))
                    steps[(r.data.tags["aesweep.trial_id"], key)] = sorted(set(seen))
            return {
                "parents": len(parent), "parent_status": parent[0].info.status if parent else None,
                "trials": len(per_trial), "finished": sum(r.info.status == "FINISHED" for r in active),
                "runs_per_trial": sorted(set(per_trial.values())), "deleted_runs": len(children) - len(active),
                "duplicated_rows": duplicates, "running": sum(r.info.status == "RUNNING" for r in active),
                "nodes": sorted({r.data.tags.get("aesweep.node") for r in active}),
                "resumed": sum("aesweep.resumed_from_epoch" in r.data.tags for r in active),
                "resumed_runs": [r.info.run_id for r in active if "aesweep.resumed_from_epoch" in r.data.tags],
                "tracking_retries": sum(int(r.data.tags.get("aesweep.tracking_retries", 0)) for r in active),
                "steps": steps, "run_ids": [r.info.run_id for r in active],
                "statuses": sorted((r.data.tags["aesweep.trial_id"], r.info.status,
                                    r.data.tags.get("aesweep.failure", "")[:300]) for r in active),
            }

        return self.mlflow_call(read)

    # Sweeps

    def spec(self, name: str, trials: int, epochs: int, tmp_path: Path) -> Path:
        data = spec_data(name, dataset={"train_size": 640, "test_size": 64},
                         # A narrow conv net, ~1 s an epoch here: slow enough that a fault lands mid-trial (an
                         # MLP ran 8 epochs faster than the test could see one of them on a quiet machine).
                         model={"backbone": "conv", "width": 0.25,
                                "latent_dim": {"grid": [2, 3, 4, 5, 6, 7, 8, 9][:trials]}},
                         train={"epochs": epochs, "batch_size": 32},
                         eval={"metrics": ["mse"], "probes": [], "figures": ["reconstructions"]},
                         search={"algorithm": "grid", "max_concurrent": 2, "max_failures": 3})
        # A job directory of its own, in the lab (never in the checkout's sweeps/, where a killed run would
        # leave it): the spec and the package, which `submit --working-dir` ships with the job.
        job_dir = self.lab.root / "jobs" / name
        shutil.copytree(REPO / "aesweep", job_dir / "aesweep", ignore=shutil.ignore_patterns("__pycache__"))
        path = job_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def submit_args(self, spec: Path) -> list[str]:
        return ["submit", str(spec), "--working-dir", str(spec.parent), "--address", self.dashboard,
                "--storage", self.storage]

    def submit(self, spec: Path) -> str:
        out = self.aesweep(*self.submit_args(spec)).stdout
        job = re.search(r"job (\S+) submitted", out)
        assert job, out
        return job.group(1)

    def job(self, job: str, what: str = "") -> dict[str, Any]:
        """Ray's job REST API (what JobSubmissionClient calls), with the token."""
        import requests

        def get():
            r = requests.get(f"{self.dashboard}/api/jobs/{job}{what}",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
            r.raise_for_status()
            return r.json()

        return self.lab.laptop_call(get)

    def job_status(self, job: str) -> str:
        return self.job(job)["status"]

    def wait_job(self, job: str, timeout: float = 400, want: tuple[str, ...] = ("SUCCEEDED",)) -> str:
        deadline = time.monotonic() + timeout
        while True:
            status = self.job_status(job)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                assert status in want, f"job {job} {status}:\n{self.job_logs(job)[-5000:]}"
                return status
            assert time.monotonic() < deadline, f"job {job} still {status}:\n{self.job_logs(job)[-5000:]}"
            time.sleep(2)

    def jobs_running(self) -> list[str]:
        import requests

        def get():
            r = requests.get(f"{self.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {self.token}"},
                             timeout=10)
            r.raise_for_status()
            return [j["submission_id"] for j in r.json() if j["status"] in ("PENDING", "RUNNING")]

        return self.lab.laptop_call(get)

    def healthy(self) -> dict[str, Any]:
        """Between fault tests: no job running and every node alive, so that one fault's damage is never the next
        test's premise. A worker whose Ray a fault took down and Ray did not bring back is started again with
        cluster-onprem.yaml's own command; then the check must hold."""
        deadline = time.monotonic() + 120
        while self.jobs_running():
            assert time.monotonic() < deadline, f"jobs still running: {self.jobs_running()}"
            time.sleep(2)
        try:
            return self.wait_workers(timeout=60)
        except AssertionError:
            pass
        alive = self.alive_nodes()
        start = yaml.safe_load(self.config.read_text())["worker_start_ray_commands"]
        for name in WORKERS:
            if self.lab.hosts[name].ip not in alive:
                commands = "; ".join(start)
                self.lab.ssh(name, f"source ~/.bashrc; export RAY_HEAD_IP={self.head.ip}; {commands}",
                             timeout=180)
        return self.wait_workers(timeout=120)

    def job_logs(self, job: str) -> str:
        try:
            return self.job(job, "/logs")["logs"]
        except Exception as err:
            return f"(no logs: {err})"

    def wait_epoch(self, name: str, ready, job: str, timeout: float = 300) -> Any:
        """Poll the sweep's child runs until ``ready(children)`` returns something truthy; fail with what was
        seen if ``job`` ends first or the time runs out."""
        def children(c):
            exp = c.get_experiment_by_name(name)
            return [] if exp is None else [r for r in c.search_runs([exp.experiment_id], max_results=200)
                                           if "mlflow.parentRunId" in r.data.tags]

        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while True:
            try:
                seen = self.mlflow_call(children)
                found = ready(seen)
            except Exception:  # the server restarting in fault (c)
                found = None
            if found:
                return found
            status = self.job_status(job)
            runs = [(r.data.tags.get("aesweep.node", "?")[:8], r.info.status, r.data.metrics.get("epoch"))
                    for r in seen]
            assert status in ("PENDING", "RUNNING"), f"job {job} {status} first; runs {runs}:\n" + \
                self.job_logs(job)[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting on {name}; job {status}; runs {runs}"
            time.sleep(1)


@pytest.fixture(scope="module")
def cluster():
    started = time.monotonic()
    lab = Lab.create(["head", *WORKERS])
    c = Cluster(lab)
    try:
        c.write_laptop_files()
        c.up_log = c.ray("up", str(c.config), "--yes", "--no-config-cache", timeout=600)
        c.alive_at_start = c.wait_workers()
        c.mlflow_wait_s = c.wait_mlflow()
        c.up_seconds = time.monotonic() - started
        yield c
    finally:
        lab.destroy()


@pytest.fixture
def healthy(cluster):
    """The health check before a fault test (see Cluster.healthy)."""
    nodes = cluster.healthy()
    assert len(nodes) == 1 + len(WORKERS)
    return cluster


def host_of(cluster: Cluster, node_id: str) -> str:
    alive = {v["node_id"]: ip for ip, v in cluster.alive_at_start.items()}
    ip = alive.get(node_id)
    return next((h.name for h in cluster.lab.hosts.values() if h.ip == ip), "?")


def report(fault: str, figures: dict[str, Any], trials: int) -> None:
    line = (f"FIGURES {fault}: trials finished {figures['finished']}/{trials}; runs per trial "
            f"{figures['runs_per_trial']} (deleted {figures['deleted_runs']}); per-epoch rows duplicated "
            f"{figures['duplicated_rows']}; runs left RUNNING {figures['running']}; resumed {figures['resumed']}; "
            f"aesweep tracking retries {figures.get('tracking_retries', 0)}")
    print(line)
    with open(os.environ.get("AESWEEP_FIGURES", "/dev/null"), "a") as f:
        f.write(line + "\n")


def assert_figures(figures: dict[str, Any], trials: int, epochs: int) -> None:
    assert figures["finished"] == trials == figures["trials"], figures
    assert figures["runs_per_trial"] == [1], figures
    assert figures["duplicated_rows"] == 0, figures
    assert figures["running"] == 0, figures
    for (trial, key), steps in figures["steps"].items():
        assert steps == list(range(1, epochs + 1)), (trial, key, steps)


# --------------------------------------------------------------------------------------------------------------
# Bring-up, a sweep from outside, security


def test_ray_up_brings_up_the_hosts_with_token_auth(cluster):
    import requests

    alive = cluster.alive_at_start
    assert alive[cluster.head.ip]["cpu"] == 0  # no trials on the head
    assert all(alive[cluster.lab.hosts[w].ip]["cpu"] == 1 for w in WORKERS)
    assert len({v["node_id"] for v in alive.values()}) == 3
    # Every host its own machine: own hostname, own Ray session in its own /tmp.
    for name in ("head", *WORKERS):
        host = cluster.lab.hosts[name]
        assert cluster.lab.ssh(name, "hostname").stdout.strip() == name
        # session_latest is a symlink to the absolute /tmp/ray/session_... as the host sees it: look for the
        # session directory itself in the host's /tmp as seen from here.
        assert (host.tmp / "ray" / "session_latest").is_symlink(), name
        assert any((host.tmp / "ray").glob("session_2*/logs/raylet.out")), name
        assert any("raylet" in cmd for cmd in cluster.lab.processes(name).values()), name
    # The job server refuses a client without the token; MLflow one without the password.
    dash = cluster.lab.laptop_call(lambda: requests.get(f"{cluster.dashboard}/api/jobs/", timeout=10).status_code)
    assert dash in (401, 403)
    wrong = cluster.lab.laptop_call(lambda: requests.get(
        f"{cluster.dashboard}/api/jobs/", headers={"Authorization": "Bearer " + "0" * 64}, timeout=10).status_code)
    assert wrong == 403
    anon = cluster.lab.laptop_call(lambda: requests.get(
        f"{cluster.mlflow}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10).status_code)
    assert anon == 401
    print(f"ray up to 3 alive nodes: {cluster.up_seconds:.0f} s")


def test_submitted_sweep_runs_on_the_workers_and_logs_to_the_heads_mlflow(cluster, tmp_path):
    trials, epochs = 2, 2
    spec = cluster.spec("onprem-submit", trials, epochs, tmp_path)
    result = cluster.aesweep(*cluster.submit_args(spec))
    out = result.stdout
    job = re.search(r"job (\S+) submitted", out).group(1)
    # It says how to follow the job and where the results are.
    assert f"ray job logs {job} --address {cluster.dashboard} --follow" in out, out
    assert "python -m aesweep status onprem-submit" in out, out
    cluster.wait_job(job)
    # The follow-up commands work as printed, from the laptop, against the token-auth head.
    printed = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines()
               if line.startswith("  ") and ":" in line}
    logs = cluster.lab.on_laptop(*shlex.split(printed["follow it"]), timeout=120)
    assert "trials:" in logs.stdout + logs.stderr  # the sweep's own progress lines, to the end of the job
    status = cluster.lab.on_laptop(*shlex.split(printed["job status"]), timeout=120)
    assert "succeeded" in (status.stdout + status.stderr).lower()
    stop = cluster.lab.on_laptop(*shlex.split(printed["stop it"]), timeout=120, check=False)
    said = (stop.stdout + stop.stderr).lower()
    assert job in stop.stdout + stop.stderr and "401" not in said and "403" not in said, said

    figures = cluster.figures("onprem-submit")
    assert_figures(figures, trials, epochs)
    assert figures["parent_status"] == "FINISHED"
    workers = {cluster.alive_at_start[cluster.lab.hosts[w].ip]["node_id"] for w in WORKERS}
    assert set(figures["nodes"]) <= workers and cluster.alive_at_start[cluster.head.ip]["node_id"] not in figures[
        "nodes"]
    # Artifacts through the server's HTTP API, stored on the head's disk (its artifact destination).
    files = cluster.mlflow_call(lambda c: [a.path for a in c.list_artifacts(figures["run_ids"][0], "model")])
    assert files == ["model/state_dict.pt"]
    assert list((cluster.head.home / "mlflow" / "artifacts").rglob("state_dict.pt"))

    # `aesweep status` from the laptop, which has no access to the cluster's storage: through MLflow.
    status = cluster.aesweep("status", "onprem-submit", "--tracking-uri", cluster.mlflow).stdout
    assert "onprem-submit: 2 finished" in status, status


# --------------------------------------------------------------------------------------------------------------
# Faults


def mid_trial_on(cluster: Cluster, host: str, epochs: int):
    node = cluster.alive_at_start[cluster.lab.hosts[host].ip]["node_id"]

    def ready(children):
        running = [r for r in children if r.data.tags.get("aesweep.node") == node and r.info.status == "RUNNING"
                   and 1 <= r.data.metrics.get("epoch", 0) <= epochs - 3]
        return running[0] if running else None

    return ready


def raylet_pid(cluster: Cluster, host: str) -> int:
    (pid,) = [p for p, cmd in cluster.lab.processes(host).items() if "/raylet " in f"{cmd} " or
              cmd.split()[0].endswith("/raylet")]
    return pid


def test_fault_raylet_killed_on_a_worker(healthy, tmp_path):
    cluster = healthy
    trials, epochs = 2, 8
    job = cluster.submit(cluster.spec("onprem-raylet", trials, epochs, tmp_path))
    victim = cluster.wait_epoch("onprem-raylet", mid_trial_on(cluster, "w1", epochs), job)
    os.kill(raylet_pid(cluster, "w1"), signal.SIGKILL)
    cluster.wait_job(job)
    figures = cluster.figures("onprem-raylet")
    report("raylet kill -9", figures, trials)
    assert_figures(figures, trials, epochs)
    # The fault hit a running trial: that very trial continued from an epoch checkpoint, in its own run.
    assert victim.info.run_id in figures["resumed_runs"], figures


def test_fault_worker_link_cut_for_a_minute(healthy, tmp_path):
    cluster = healthy
    trials, epochs = 2, 10
    job = cluster.submit(cluster.spec("onprem-linkcut", trials, epochs, tmp_path))
    host = "w2"
    victim = cluster.wait_epoch("onprem-linkcut", mid_trial_on(cluster, host, epochs), job)
    cluster.lab.cut(host)
    try:
        time.sleep(60)
    finally:
        cluster.lab.reconnect(host)
    cluster.wait_job(job)
    figures = cluster.figures("onprem-linkcut")
    report("link cut 60 s", figures, trials)
    assert_figures(figures, trials, epochs)
    # The trial running on the cut host: Ray declared the node dead within the minute and Tune continued the
    # trial from its epoch checkpoint elsewhere, in the same run.
    assert victim.info.run_id in figures["resumed_runs"], figures


def test_fault_mlflow_server_down_for_45_s(healthy, tmp_path):
    cluster = healthy
    trials, epochs = 2, 8
    # MLflow's own per-request retries off: what carries the trials through the outage is aesweep's retry
    # (tracking.retry), which each run counts in its aesweep.tracking_retries tag.
    spec = cluster.spec("onprem-mlflowdown", trials, epochs, tmp_path)
    out = cluster.aesweep(*cluster.submit_args(spec), "--env", "MLFLOW_HTTP_REQUEST_MAX_RETRIES=0",
                          "--env", "MLFLOW_HTTP_REQUEST_TIMEOUT=10").stdout
    job = re.search(r"job (\S+) submitted", out).group(1)
    cluster.wait_epoch("onprem-mlflowdown", lambda ch: len([r for r in ch if r.data.metrics.get("epoch", 0) >= 1])
                       >= 2, job)
    # The server and its children (`mlflow server` runs uvicorn as a child process, which a TERM of the parent
    # alone leaves serving).
    cluster.lab.ssh("head", "pid=$(cat ~/mlflow/server.pid); pkill -TERM -P $pid; kill -TERM $pid")
    deadline = time.monotonic() + 60
    # The server and its uvicorn workers; not the watcher that started it (its command line names
    # start-mlflow.sh and gcs_server, and it lives until `ray down`).
    while any("mlflow server" in cmd or "uvicorn" in cmd for cmd in cluster.lab.processes("head").values()):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # Longer than one round of aesweep's backoff (1, 2, 4, 8, 10 s ...): several retries of one call.
    time.sleep(45)
    line = next(c for c in yaml.safe_load(cluster.config.read_text())["head_start_ray_commands"]
                if "start-mlflow.sh" in c)
    cluster.lab.ssh("head", f"source ~/.bashrc; {line}")
    cluster.wait_job(job)
    figures = cluster.figures("onprem-mlflowdown")
    report("MLflow down 45 s", figures, trials)
    assert_figures(figures, trials, epochs)
    assert figures["tracking_retries"] >= 1, figures  # the outage hit running trials, and aesweep rode it out


def test_fault_driver_killed_then_resume(healthy, tmp_path):
    cluster = healthy
    trials, epochs = 2, 8
    job = cluster.submit(cluster.spec("onprem-driver", trials, epochs, tmp_path))
    cluster.wait_epoch("onprem-driver", lambda ch: len([r for r in ch if r.data.metrics.get("epoch", 0) >= 2])
                       >= 2, job)
    # The job's entrypoint: Ray's job supervisor runs it through a shell, so the driver is that shell and the
    # python under it; both go.
    drivers = [p for p, cmd in cluster.lab.processes("head").items() if "-m aesweep run" in cmd]
    assert drivers
    for pid in drivers:
        os.kill(pid, signal.SIGKILL)
    cluster.wait_job(job, want=("FAILED",))
    out = cluster.aesweep("submit", "--resume", "onprem-driver", "--address", cluster.dashboard,
                          "--storage", cluster.storage).stdout
    resumed = re.search(r"job (\S+) submitted", out).group(1)
    cluster.wait_job(resumed)
    figures = cluster.figures("onprem-driver")
    report("driver SIGKILL + resume", figures, trials)
    assert figures["finished"] == trials, (figures["statuses"], cluster.job_logs(resumed)[-4000:])
    assert_figures(figures, trials, epochs)
    assert figures["parent_status"] == "FINISHED"


# --------------------------------------------------------------------------------------------------------------
# Last: ray down


def test_ray_down_leaves_no_process_behind(cluster):
    cluster.ray("down", str(cluster.config), "--yes", timeout=300)
    started = time.monotonic()
    left: dict[str, dict[int, str]] = {}
    while time.monotonic() - started < 150:
        left = {name: cluster.lab.processes(name) for name in ("head", *WORKERS)}
        if not any(left.values()):
            break
        time.sleep(2)
    assert not any(left.values()), json.dumps({k: list(v.values()) for k, v in left.items()}, indent=1)
    print(f"ray down: every host empty after {time.monotonic() - started:.0f} s")
