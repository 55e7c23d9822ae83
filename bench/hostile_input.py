"""How long and how much memory `python -m aesweep validate` takes to reject hostile or absurd spec files.

    .venv/bin/python bench/hostile_input.py [--repeat 3]

Each case runs the real CLI in a fresh process (median of --repeat runs) and reports its CPU time; "work" is that
minus the CPU time of a process that only imports the CLI and prints its version, i.e. what handling the input
itself costs. Peak memory is the process's VmHWM. The cases are those of tests/spec/test_hostile_input.py.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAUNCHER = """
import atexit, os, runpy, sys
atexit.register(lambda: open(os.environ["HWM"], "w").write(
    next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))))
sys.argv = ["aesweep", *sys.argv[1:]]
runpy.run_module("aesweep", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], hwm: Path) -> tuple[float, int, int, str]:
    """(CPU seconds, peak bytes, exit code, last stderr line). CPU time (user + system, from wait4), not wall
    time: on a shared 2-core machine the wall clock mostly measures the neighbours."""
    env = {**os.environ, "HWM": str(hwm), "PYTHONPATH": str(REPO)}
    err = Path(str(hwm) + ".err")
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], stdout=subprocess.DEVNULL, stderr=stderr,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = (err.read_text().strip().splitlines() or [""])[-1]
    return usage.ru_utime + usage.ru_stime, int(hwm.read_text()) * 1024, proc.returncode, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from tests.test_hostile_input import CASES  # noqa: E402  (the test's cases, one definition)

    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        base = statistics.median(run(["--version"], hwm)[0] for _ in range(args.repeat))
        print(f"baseline `python -m aesweep --version`: {base:.2f} CPU s\n")
        print("| case | exit | CPU s | work s | peak MB | message |\n|---|---|---|---|---|---|")
        for name, (content, _) in CASES.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_bytes(content)
            runs = [run(["validate", str(path)], hwm) for _ in range(args.repeat)]
            wall = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            message = runs[0][3].replace(str(path), "FILE")[:90]
            print(f"| {name} | {runs[0][2]} | {wall:.2f} | {max(wall - base, 0):.2f} | {peak / 2**20:.0f} | "
                  f"{message} |")


if __name__ == "__main__":
    main()
