"""Probe suite against the published GridSearchCV protocol: accuracy, ARI and wall time, measured in one run.

What it measures: on the same embeddings (Fashion-MNIST pixels projected to d dimensions by the fixed Gaussian
random projection of shared/baselines/naive_probes.py, --train-n train / --test-n test rows), the wall time and
numbers of

- ours: ``aesweep.evaluation.probes.run_probes`` with the default ``EvalConfig`` (protocol fast, backend auto) asked for the
  published suite: classifiers logreg, mlp, random_forest, knn; clusterers kmeans, gmm, hdbscan;
- the baseline: ``run_protocol`` of shared/baselines/naive_probes.py (imported by path), as shipped. Its printed
  ``probe X acc=`` and ``cluster X ari=`` lines are captured and parsed; each line is time-stamped when printed,
  which gives its per-method times.

Both sides are timed after their imports (a tiny warm-up call of ours first). The baseline reports the best test
accuracy over three preprocessings and a small grid (a selection on the test set); ours is one fixed pipeline.
The machine may be shared: the load average is printed before and after.

    python bench/probes.py [--train-n 10000] [--test-n 2000] [--dims 32 256] [--seed 0]
                           [--baseline-n-jobs 1] [--baseline-blas-threads N] [--skip-baseline]
                           [--eval KEY=VALUE ...]   (EvalConfig overrides for ours, e.g. slow_subsample=10000)
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
import yaml

from aesweep.evaluation import probes
from aesweep.spec.trial import EvalConfig

BASELINE = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "naive_probes.py"
CLASSIFIERS = ["logreg", "mlp", "random_forest", "knn"]
CLUSTERERS = ["kmeans", "gmm", "hdbscan"]
LINE = re.compile(r"^(probe|cluster) (\w+) (acc|ari)=([0-9.]+)")


def load_baseline(path: Path):
    spec = importlib.util.spec_from_file_location("naive_probes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LineClock(io.TextIOBase):
    """A stdout stand-in that keeps every printed line with the perf_counter time at which it was completed, and
    echoes it to ``echo`` as ``# baseline: ...`` (a long baseline run shows its progress in a log)."""

    def __init__(self, echo: io.TextIOBase) -> None:
        self.lines: list[tuple[float, str]] = []
        self._pending = ""
        self._echo = echo

    def write(self, text: str) -> int:
        self._pending += text
        *done, self._pending = self._pending.split("\n")
        now = time.perf_counter()
        for line in done:
            self.lines.append((now, line))
            self._echo.write(f"# baseline: {line}\n")
            self._echo.flush()
        return len(text)


def run_ours(xtr, ytr, xte, yte, seed: int, overrides: dict | None = None) -> tuple[dict[str, float], float]:
    cfg = EvalConfig(probes=CLASSIFIERS, clustering=CLUSTERERS, **(overrides or {}))
    args = [torch.as_tensor(a, dtype=torch.float32) for a in (xtr, xte)]
    t0 = time.perf_counter()
    out = probes.run_probes(args[0], torch.as_tensor(ytr), args[1], torch.as_tensor(yte), cfg, num_classes=10,
                            seed=seed)
    return out, time.perf_counter() - t0


def run_baseline(naive, xtr, ytr, xte, yte, seed: int, n_jobs: int, blas_threads: int | None):
    """(numbers {method: acc or ari}, seconds per method, total seconds)."""
    clock = LineClock(sys.stdout)
    limit = contextlib.nullcontext()
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=blas_threads, user_api="blas")
    t0 = time.perf_counter()
    with limit, contextlib.redirect_stdout(clock):
        naive.run_protocol(xtr, ytr, xte, yte, seed, n_jobs)
    total = time.perf_counter() - t0
    numbers, seconds, last = {}, {}, t0
    for stamp, line in clock.lines:
        match = LINE.match(line)
        if match:
            numbers[match.group(2)] = float(match.group(4))
            seconds[match.group(2)] = stamp - last
            last = stamp
    return numbers, seconds, total


def table(d: int, ours: dict[str, float], ours_s: float, base: dict[str, float] | None,
          base_times: dict[str, float] | None, base_s: float | None) -> str:
    rows = [f"### d = {d}", "",
            "| method | metric | ours | baseline | ours - baseline (points) | ours s | baseline s |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for kind, names, metric in (("probe", CLASSIFIERS, "acc"), ("cluster", CLUSTERERS, "ari")):
        for name in names:
            mine = ours[f"{kind}/{name}/{metric}"]
            mine_s = ours[f"time/{kind}/{name}_s"]
            if base is None:
                rows.append(f"| {name} | {metric} | {mine:.4f} | - | - | {mine_s:.2f} | - |")
                continue
            theirs = base.get(name, float("nan"))
            rows.append(f"| {name} | {metric} | {mine:.4f} | {theirs:.4f} | {100 * (mine - theirs):+.1f} | "
                        f"{mine_s:.2f} | {base_times.get(name, float('nan')):.2f} |")
    speed = f"{base_s / ours_s:.1f}x" if base_s is not None else "-"
    theirs_s = "-" if base_s is None else f"{base_s:.2f}"
    rows.append(f"| **total** | wall s | {ours_s:.2f} | {theirs_s} | speed-up {speed} | | |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--train-n", type=int, default=10_000)
    p.add_argument("--test-n", type=int, default=2_000)
    p.add_argument("--dims", type=int, nargs="+", default=[32, 256])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-n-jobs", type=int, default=1, help="the baseline's --n-jobs (its default: 1)")
    p.add_argument("--baseline-blas-threads", type=int, default=None,
                   help="cap the baseline's BLAS threads (default: as shipped, uncapped)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                   help="override an EvalConfig field of ours, e.g. --eval slow_subsample=10000 (repeatable)")
    args = p.parse_args()
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.eval)}

    naive = load_baseline(BASELINE)
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"scikit-learn {sklearn.__version__}, python {sys.version.split()[0]}; baseline {BASELINE}")
    print(f"# load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    # Warm-up: scikit-learn and hdbscan import lazily in aesweep.evaluation.probes; the baseline imported them above.
    x, y = np.random.default_rng(0).normal(size=(200, 8)), np.arange(200) % 10
    run_ours(x, y, x, y, 0)

    tables, summary = [], []
    for d in args.dims:
        xtr, ytr, xte, yte = naive.random_projection_embeddings(args.root, d, args.train_n, args.test_n, args.seed)
        print(f"# d={d}: train {xtr.shape} test {xte.shape}", flush=True)
        ours, ours_s = run_ours(xtr, ytr, xte, yte, args.seed, overrides)
        print(f"# ours d={d}: {ours_s:.2f} s " + " ".join(
            f"{k.split('/')[1]}={v:.4f}" for k, v in ours.items() if re.fullmatch(r"(probe/\w+/acc|cluster/\w+/ari)", k)),
            flush=True)
        base = base_times = base_s = None
        if not args.skip_baseline:
            base, base_times, base_s = run_baseline(naive, xtr, ytr, xte, yte, args.seed, args.baseline_n_jobs,
                                                    args.baseline_blas_threads)
        tables.append(table(d, ours, ours_s, base, base_times, base_s))
        if base is not None:
            worst = min(100 * (ours[f"probe/{n}/acc"] - base[n]) for n in CLASSIFIERS)
            summary.append(f"| {d} | {ours_s:.1f} | {base_s:.1f} | {base_s / ours_s:.1f}x | {worst:+.1f} |")

    print(f"\n## Probes: ours (aesweep.evaluation.probes, defaults{''.join(f', {k}={v}' for k, v in overrides.items())}) vs baseline (naive_probes.run_protocol), "
          f"Fashion-MNIST random projections, {args.train_n} train / {args.test_n} test, seed {args.seed}\n")
    print("\n\n".join(tables))
    if summary:
        print("\n| d | ours s | baseline s | speed-up | worst classifier acc delta (points) |")
        print("|---:|---:|---:|---:|---:|")
        print("\n".join(summary))
    print(f"\n# load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
