"""What a process tree holds on the network: its TCP/UDP connections and listeners, sampled while it runs.

Used by tests/service/test_loopback.py to show that a local sweep (and `mlflow ui`) never leaves loopback. Runnable on
its own to measure any command: ``python -m tests.sockets -- python -m aesweep run sweeps/quickstart.yaml``.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(ip.split("%")[0])
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d, which Python before 3.13 never calls loopback.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def is_loopback(ip: str) -> bool:
    return _address(ip).is_loopback


def is_wildcard(ip: str) -> bool:
    return _address(ip).is_unspecified


@dataclass
class Seen:
    """Every socket a sampled tree held: (process name, kind, local address, remote address)."""

    samples: int = 0
    processes: set[str] = field(default_factory=set)
    listeners: set[tuple[str, str, int]] = field(default_factory=set)  # (process, ip, port)
    connections: set[tuple[str, str, str]] = field(default_factory=set)  # (process, local ip, remote ip)

    def off_loopback_connections(self) -> list[tuple[str, str, str]]:
        return sorted(c for c in self.connections if not (is_loopback(c[1]) and is_loopback(c[2])))

    def off_loopback_listeners(self) -> list[tuple[str, str, int]]:
        """Listeners bound to an address of a network interface (not loopback, not the wildcard)."""
        return sorted(entry for entry in self.listeners if not is_loopback(entry[1]) and not is_wildcard(entry[1]))

    def wildcard_listeners(self) -> list[tuple[str, str, int]]:
        return sorted(entry for entry in self.listeners if is_wildcard(entry[1]))

    def summary(self) -> str:
        return (f"{self.samples} samples, {len(self.processes)} processes, {len(self.connections)} distinct "
                f"connections ({len(self.off_loopback_connections())} off loopback), {len(self.listeners)} "
                f"listeners ({len(self.off_loopback_listeners())} on a non-loopback address, "
                f"{len(self.wildcard_listeners())} on the wildcard)")


def _name(proc: psutil.Process) -> str:
    """A process's label: its program's base name and up to two arguments, each argument by its base name too.

    Base names, because a full path's length depends on where the checkout lies (a long one cut a truncated label
    to 'gcs_ser...' on CI); Ray workers rename themselves ('ray::ImplicitFunc.train'), which survives as it is.
    """
    try:
        cmd = proc.cmdline()
        return " ".join(os.path.basename(part) or part for part in cmd[:3]) if cmd else proc.name()
    except psutil.Error:
        return "?"


def sample(root: psutil.Process, seen: Seen) -> None:
    """One look at ``root`` and every descendant: their inet sockets into ``seen``."""
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    seen.samples += 1
    for proc in tree:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        name = _name(proc)
        seen.processes.add(name)
        for c in conns:
            if not c.laddr:
                continue
            if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr):  # TCP listen, or unbound UDP
                seen.listeners.add((name, c.laddr.ip, c.laddr.port))
            elif c.raddr:
                seen.connections.add((name, c.laddr.ip, c.raddr.ip))


def watch(proc: subprocess.Popen, timeout: float, interval: float = 0.2) -> Seen:
    """Sample ``proc``'s tree every ``interval`` seconds until it exits (or ``timeout``); then its exit code is
    in ``proc.returncode``."""
    seen = Seen()
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        sample(root, seen)
        time.sleep(interval)
    return seen


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    result = watch(child, timeout=3600)
    child.wait()
    print(f"exit {child.returncode}: {result.summary()}")
    for entry in result.off_loopback_connections():
        print("connection", *entry)
    for entry in result.off_loopback_listeners():
        print("listener", *entry)
    for entry in result.wildcard_listeners():
        print("wildcard", *entry)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
