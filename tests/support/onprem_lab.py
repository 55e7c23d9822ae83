"""A small on-prem lab on one machine: hosts that are Linux network namespaces, each with its own sshd.

Each host is what `ray up` on a lab expects of a machine: its own address on a private LAN, its own hostname, its
own process table (``ray stop`` kills every Ray process it can see: without a PID namespace per host it would
kill the other hosts' Ray, and anybody else's on this machine), its own /tmp (Ray's session directories and
sockets, the local provider's cluster-state file) and its own home directory (``ray up`` puts its bootstrap
config, key and file mounts there). The rest of the filesystem is shared, as a lab shares an NFS mount: the Python
environment, and the directory that plays the part of the lab's shared storage.

Network: one bridge in a namespace of its own (the "switch"), a veth pair from it to every host. The addresses
(``SUBNET``) exist only in those namespaces; there is no default route anywhere, so nothing can leave them.
The "laptop" is one more namespace on the same LAN: ``ray up``, ``aesweep submit`` and ``aesweep status`` run
there, and ``Lab.laptop_call`` runs a Python function in a thread that has entered its network namespace (the
MLflow reads of the tests).

Needs root, iproute2, util-linux (unshare, nsenter), openssh-server, openssh-client and rsync.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBNET = "10.213.7"  # 10.213.7.0/24: private (RFC 1918), only on the lab's veths
CLONE_NEWNET = 0x40000000
TOOLS = ("ip", "unshare", "nsenter", "ssh", "ssh-keygen", "rsync")
SSHD = "/usr/sbin/sshd"
# Every name the lab makes starts with its tag (aes + 6 hex digits): namespaces aes<tag>-<host> and aes<tag>-sw,
# veths v<tag><i> / p<tag><i>, the directory /var/tmp/aesweep-lab-<tag>. What a killed run left behind is found
# by these, and only these, names.
LAB_DIRS = Path("/var/tmp")
LAB_DIR_PREFIX = "aesweep-lab-"
OWNER_FILE = "owner"  # "<pid> <start time in clock ticks>" of the test process that built the lab


def _run_paths() -> tuple[Path, ...]:
    """Where this test run lives: the checkout (the hosts run its ``ray``), its virtual environment and the
    interpreter that environment was made from."""
    return (Path(__file__).resolve().parents[2], Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
            Path(sys.executable).resolve())


def private_mount(private: Path, shared: Path) -> list[str]:
    """Shell commands (inside a new mount namespace) that put a host's ``private`` directory on ``shared`` (/tmp,
    the home directory), after binding the top directories of the test run's own paths under ``shared`` back into
    it, so that the shared environment still runs where every path names it."""
    commands = []
    for top in dict.fromkeys(shared / path.relative_to(shared).parts[0]
                             for path in _run_paths() if path != shared and path.is_relative_to(shared)):
        target = private / top.relative_to(shared)
        target.mkdir(parents=True, exist_ok=True)
        commands.append(f"mount --bind {shlex.quote(str(top))} {shlex.quote(str(target))}")
    return [*commands, f"mount --rbind {shlex.quote(str(private))} {shlex.quote(str(shared))}"]


def missing_tools() -> list[str]:
    """What this machine lacks to build the lab (an empty list: it can)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not os.path.exists(SSHD):
        missing.append(SSHD)
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def run(*cmd: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, timeout=timeout, capture_output=True, text=True, **kw)


@dataclass
class Host:
    name: str
    ip: str
    netns: str
    dir: Path  # home/ and tmp/ of this host, seen from outside
    port: str  # the switch-side end of its veth pair: `ip link set PORT down` pulls its cable
    init: subprocess.Popen | None = None  # PID 1 of its PID namespace (the sshd), seen from outside

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    def inner_init(self) -> int | None:
        """The outer pid of PID 1 of the host's PID namespace: the child that ``unshare --fork`` made (``init``
        itself, the unshare process, stays in the outer namespace)."""
        if self.init is None:
            return None
        for pid in _pids():
            if _ppid(pid) == self.init.pid:
                return pid
        return None

    def pid_ns(self) -> str | None:
        """The host's PID namespace; None when it is gone. Never the namespace this process is in: whatever
        selects processes by this namespace must not select the machine's own processes."""
        inner = self.inner_init()
        ns = _readlink(f"/proc/{inner}/ns/pid") if inner is not None else None
        if ns is None or ns == _readlink("/proc/self/ns/pid"):
            return None
        return ns


@dataclass
class Lab:
    root: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    switch: str = ""
    _laptop_pool: concurrent.futures.ThreadPoolExecutor | None = None
    _destroyed: bool = False

    # ----------------------------------------------------------------------------------------------------------
    # building and tearing down

    @classmethod
    def create(cls, names: list[str]) -> Lab:
        """Hosts ``names`` (plus ``laptop``) on one LAN, each running its sshd; a key for root on all of them in
        the laptop's ~/.ssh. Tear down with ``destroy`` (also after a failure half-way)."""
        remove_leftovers()
        tag = secrets.token_hex(3)
        lab = cls(LAB_DIRS / f"{LAB_DIR_PREFIX}{tag}", switch=f"aes{tag}-sw")
        lab.root.mkdir(mode=0o700)
        (lab.root / OWNER_FILE).write_text(_owner(os.getpid()) or "")
        (lab.root / "shared").mkdir()
        atexit.register(lab.destroy)  # also when the test process is interrupted mid-fixture
        try:
            run("ip", "netns", "add", lab.switch)
            run("ip", "-n", lab.switch, "link", "add", "br0", "type", "bridge")
            run("ip", "-n", lab.switch, "link", "set", "br0", "up")
            for i, name in enumerate(["laptop", *names]):
                lab._add_host(name, f"{SUBNET}.{10 + i}", f"aes{tag}-{name}", f"p{tag}{i}")
            lab._keys()
            for host in lab.hosts.values():
                if host.name != "laptop":
                    lab._start_sshd(host)
            for host in lab.hosts.values():
                if host.name != "laptop":
                    lab.wait_ssh(host)
        except BaseException:
            lab.destroy()
            raise
        return lab

    def _add_host(self, name: str, ip: str, netns: str, port: str) -> None:
        host = Host(name, ip, netns, self.root / name, port)
        self.hosts[name] = host  # before anything is made: destroy removes whatever of it exists
        for sub in ("home", "tmp"):
            (host.dir / sub).mkdir(parents=True)
        host.home.chmod(0o700)
        host.tmp.chmod(0o1777)
        run("ip", "netns", "add", netns)
        inner = f"v{port[1:]}"
        run("ip", "link", "add", inner, "type", "veth", "peer", "name", port)
        run("ip", "link", "set", inner, "netns", netns)
        run("ip", "link", "set", port, "netns", self.switch)
        run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", netns, "link", "set", inner, "name", "eth0")
        run("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")

    def _keys(self) -> None:
        laptop = self.hosts["laptop"]
        ssh = laptop.home / ".ssh"
        ssh.mkdir(mode=0o700)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aesweep-lab", "-f", str(ssh / "id_ed25519"))
        public = (ssh / "id_ed25519.pub").read_text()
        # Host keys: one per host; the laptop's known_hosts is written from them, so the test's own ssh calls
        # check host keys for real (Ray's launcher turns the check off for its own connections).
        known = []
        for host in self.hosts.values():
            if host.name == "laptop":
                continue
            d = host.home / ".sshd"
            d.mkdir(mode=0o700)
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519"))
            known.append(f"{host.ip} {(d / 'host_ed25519.pub').read_text().strip()}")
            (host.home / ".ssh").mkdir(mode=0o700)
            (host.home / ".ssh" / "authorized_keys").write_text(public)
            (host.home / ".ssh" / "authorized_keys").chmod(0o600)
            # Paths as the host sees them: its home is mounted on root's home directory.
            (d / "sshd_config").write_text("\n".join([
                f"ListenAddress {host.ip}", "Port 22", f"HostKey {self.home_inside}/.sshd/host_ed25519",
                f"PidFile {self.home_inside}/.sshd/sshd.pid", "PermitRootLogin prohibit-password",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                "AuthorizedKeysFile .ssh/authorized_keys", "StrictModes yes", "PrintMotd no",
                "Subsystem sftp internal-sftp", "MaxStartups 50:30:100", "MaxSessions 50", ""]))
        (ssh / "known_hosts").write_text("\n".join(known) + "\n")

    @property
    def home_inside(self) -> str:
        return pwd.getpwuid(0).pw_dir

    def _start_sshd(self, host: Host) -> None:
        """The host's sshd as PID 1 of new PID, mount and UTS namespaces inside its network namespace: its own
        hostname, /tmp and home; the paths of the Python environment that live under root's home (a pyenv
        interpreter, say) are bound into the private home so that the shared environment still runs."""
        real_home = Path(self.home_inside)
        script = [f"hostname {host.name}", *private_mount(host.tmp, Path("/tmp")),
                  *private_mount(host.home, real_home), "mkdir -p /run/sshd",
                  f"exec {SSHD} -D -e -f {real_home}/.sshd/sshd_config"]
        log = (host.dir / "sshd.log").open("w")
        host.init = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", "--kill-child", "bash", "-c", "; ".join(script)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ssh(self, host: Host, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = self.ssh(host.name, "hostname", check=False, timeout=20)
            if result.returncode == 0 and result.stdout.strip() == host.name:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd on {host.name} did not answer: {result.stderr}\n"
                                     + (host.dir / "sshd.log").read_text())
            time.sleep(0.3)

    def destroy(self) -> None:
        """Kill every process of every host (PID 1 of each PID namespace takes the rest with it), delete the
        namespaces, veths and the lab's directory. Idempotent (the fixture and atexit both call it): a second
        call does nothing, and no call signals a process that was already reaped (its pid may belong to another
        process by then). Safe after a half-built lab or host."""
        if self._destroyed:
            return
        self._destroyed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.destroy)
        if self._laptop_pool is not None:
            self._laptop_pool.shutdown(wait=False, cancel_futures=True)
            self._laptop_pool = None
        for host in self.hosts.values():
            if host.init is None:
                continue
            if host.init.poll() is None:  # not reaped: its pid (and that of its child) are still its own
                # SIGKILL of a PID namespace's PID 1 makes the kernel kill every process in that namespace.
                inner = host.inner_init()
                if inner is not None and host.pid_ns() is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(inner, signal.SIGKILL)
                host.init.kill()  # Popen.kill: never signals a process it has reaped
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.init.wait(timeout=20)
        # Laptop commands (and anything else started with `ip netns exec`) live in the outer PID namespace:
        # found by their network namespace, which is never this process's own (netns_pids checks).
        for host in self.hosts.values():
            kill_netns_processes(host.netns)
            run("ip", "netns", "del", host.netns, check=False)
            # A veth not yet moved into its namespaces (a host that failed half-way) is still out here.
            run("ip", "link", "del", f"v{host.port[1:]}", check=False)
        if self.switch:
            kill_netns_processes(self.switch)
            run("ip", "netns", "del", self.switch, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------------------------------------------------
    # looking at hosts from outside

    def host_pids(self, host: Host) -> list[int]:
        """Every live process of the host's PID namespace, as pids of this (the outer) namespace."""
        target = host.pid_ns()
        if target is None:
            return []
        return [pid for pid in _pids() if _readlink(f"/proc/{pid}/ns/pid") == target]

    def netns_pids(self, netns: str) -> list[int]:
        return netns_pids(netns)

    def processes(self, name: str) -> dict[int, str]:
        """The host's live processes (outer pid -> command line), PID 1 (its sshd) and zombies excluded."""
        host = self.hosts[name]
        out = {}
        for pid in self.host_pids(host):
            if pid == host.inner_init() or _is_zombie(pid):
                continue
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if cmd.strip() and not cmd.startswith("sshd:"):  # its sshd and SSH sessions
                    out[pid] = cmd.strip()
        return out

    # ----------------------------------------------------------------------------------------------------------
    # running things

    @property
    def key(self) -> Path:
        return self.hosts["laptop"].home / ".ssh" / "id_ed25519"

    def laptop_env(self, **extra: str) -> dict[str, str]:
        laptop = self.hosts["laptop"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "MLFLOW_")) and k not in ("HOME", "TMPDIR")}
        env.update(HOME=str(laptop.home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   RAY_AUTH_MODE="token", PYTHONUNBUFFERED="1", COLUMNS="200")
        env.update(extra)
        return env

    def laptop_argv(self, argv: list[str]) -> list[str]:
        """``argv`` on the laptop: its network namespace, and its own /tmp (Ray's launcher keeps its cluster
        state and SSH control sockets there)."""
        laptop = self.hosts["laptop"]
        return ["ip", "netns", "exec", laptop.netns, "unshare", "--mount", "--propagation", "private", "bash",
                "-c", " && ".join([*private_mount(laptop.tmp, Path("/tmp")), 'exec "$@"']), "laptop", *argv]

    def on_laptop(self, *argv: str, timeout: float = 600, check: bool = True, cwd: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self.laptop_argv(list(argv)), capture_output=True, text=True, timeout=timeout,
                                cwd=cwd, env=env or self.laptop_env(), start_new_session=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-6000:]}\n"
                                 f"{result.stderr[-6000:]}")
        return result

    def ssh(self, host: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """A shell command on a host over SSH from the laptop (host keys checked against known_hosts)."""
        laptop = self.hosts["laptop"]
        return self.on_laptop(
            "ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={laptop.home}/.ssh/known_hosts",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            f"root@{self.hosts[host].ip}", command, check=check, timeout=timeout)

    def laptop_call(self, fn, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a thread of this process that has entered the laptop's network namespace
        (sockets it opens are the laptop's). One thread, reused."""
        if self._laptop_pool is None:
            netns = f"/run/netns/{self.hosts['laptop'].netns}"

            def enter() -> None:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(netns, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns into the laptop's network namespace")
                finally:
                    os.close(fd)

            self._laptop_pool = concurrent.futures.ThreadPoolExecutor(1, initializer=enter)
        return self._laptop_pool.submit(fn, *args, **kwargs).result()

    def cut(self, host: str) -> None:
        """Pull the host's cable: its switch port goes down (its eth0 loses carrier)."""
        run("ip", "-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def reconnect(self, host: str) -> None:
        run("ip", "-n", self.switch, "link", "set", self.hosts[host].port, "up")


def netns_pids(netns: str) -> list[int]:
    """The live processes in the named network namespace; never this machine's own namespace."""
    try:
        target = os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return []
    if target == os.stat("/proc/self/ns/net").st_ino:
        return []
    out = []
    for pid in _pids():
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}/ns/net").st_ino == target:
                out.append(pid)
    return out


def kill_netns_processes(netns: str) -> None:
    for pid in netns_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _owner(pid: int) -> str | None:
    """'<pid> <start time>' of a live process (the start time tells a reused pid apart), None if it is gone."""
    try:
        return f"{pid} {Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def remove_leftovers() -> list[str]:
    """Tear down what a lab whose test process is gone (killed with SIGKILL: no fixture, no atexit) left: the
    processes in its namespaces (sshd, Ray), its namespaces, veths and directory. Only the lab's own names, and
    only labs whose owner is dead: a lab another live test run is using is left alone. Returns the tags
    removed."""
    removed = []
    for root in sorted(LAB_DIRS.glob(f"{LAB_DIR_PREFIX}*")):
        tag = root.name[len(LAB_DIR_PREFIX):]
        if len(tag) != 6 or not all(c in "0123456789abcdef" for c in tag):
            continue
        owner = (root / OWNER_FILE).read_text().strip() if (root / OWNER_FILE).is_file() else ""
        pid = owner.split()[0] if owner else ""
        if pid.isdigit() and _owner(int(pid)) == owner:
            continue  # its test run is alive
        namespaces = [n.split()[0] for n in run("ip", "netns", "list", check=False).stdout.splitlines()
                      if n.startswith(f"aes{tag}-")]
        for netns in namespaces:
            kill_netns_processes(netns)
        for netns in namespaces:
            run("ip", "netns", "del", netns, check=False)
        for link in run("ip", "-o", "link", "show", check=False).stdout.splitlines():
            name = link.split(":")[1].strip().split("@")[0] if ":" in link else ""
            if name.startswith((f"v{tag}", f"p{tag}")):
                run("ip", "link", "del", name, check=False)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(tag)
    return removed


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
