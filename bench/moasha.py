"""MO-ASHA vs ASHA vs no early stopping: Pareto hypervolume kept per trial-epoch spent.

The same two-objective search (test/mse min, probe/knn/acc max) run three ways with ``aesweep.service.driver.run_sweep``
on one local Ray (--cpus CPUs), a temporary sqlite MLflow store and temporary Tune storage:

- ``none``:   no early stopping: every trial trains its --epochs epochs;
- ``asha``:   Ray's ASHA on ``val/loss`` (min), the single-metric stopping a multi-objective sweep had so far;
- ``moasha``: aesweep's MO-ASHA on ``val/mse`` (min) and ``val/probe/knn/acc`` (max) (the online probe runs every
  epoch in all three, so the per-epoch cost is the same).

The searcher is seeded random search (``search.algorithm: random``, ``search.seed`` = the searcher seed): for one
seed the three ways train exactly the same --trials configurations (variant, latent size, width, learning rate,
beta), so only the stopping differs. Real data: a Fashion-MNIST subset (the system copy at
/usr/share/datasets/fashion-mnist), an MLP autoencoder. Rungs: grace 1 epoch, reduction factor --rf.

Measured per sweep, from MLflow:
- trial-epochs: the sum over trials of the epochs each trained (the compute);
- hypervolume of the finished trials' Pareto front of (test/mse, -probe/knn/acc) against the fixed reference point
  (--ref-mse, -(--ref-acc)), computed with a 2-D sweep (aesweep.service.pareto.hypervolume_2d, tested against Optuna's);
- the hypervolume curve against trial-epochs: after each trial finished, the front of the trials finished so far
  against the trial-epochs every trial had spent by then (MLflow's epoch timestamps).

Printed: a table over --seeds searcher seeds (mean and spread), the same at equal compute (each method's curve read
at MO-ASHA's final trial-epochs), and a PNG of hypervolume against trial-epochs (mean over seeds, min-max band).

    nice -n 10 python bench/moasha.py [--seeds 3] [--trials 24] [--epochs 9] [--rf 3] [--train-size 3000]
                                      [--cpus 2] [--plot docs/moasha_hypervolume.png]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

METHODS = ("none", "asha", "moasha")
OBJECTIVES = {"test/mse": "min", "probe/knn/acc": "max"}


def spec_data(method: str, seed: int, args: argparse.Namespace) -> dict:
    scheduler: dict = {"name": "none"}
    if method == "asha":
        scheduler = {"name": "asha", "metric": "val/loss", "mode": "min", "grace_period": 1,
                     "reduction_factor": args.rf}
    elif method == "moasha":
        scheduler = {"name": "moasha", "metrics": {"val/mse": "min", "val/probe/knn/acc": "max"},
                     "grace_period": 1, "reduction_factor": args.rf}
    return {
        "name": f"bench-{method}-s{seed}",
        "dataset": {"name": "fashion_mnist", "train_size": args.train_size, "test_size": args.test_size,
                    "val_fraction": 0.2},
        "model": {"backbone": "mlp", "latent_dim": {"int": [2, 64], "log": True},
                  "width": {"choice": [0.25, 0.5, 1.0]}},
        "objective": {"variant": {"choice": ["ae", "vae", "sparse", "denoising"]},
                      "vae": {"beta": {"loguniform": [1.0e-3, 4.0]}},
                      "sparse": {"sparsity": {"loguniform": [1.0e-5, 1.0e-1]}},
                      "denoising": {"noise_sigma": {"uniform": [0.1, 0.6]}}},
        "train": {"epochs": args.epochs, "batch_size": 128, "lr": {"loguniform": [1.0e-4, 3.0e-2]},
                  "early_stopping": {"patience": None}},
        "eval": {"metrics": ["mse"], "probes": ["knn"], "clustering": [], "figures": [],
                 "online_probe_every": 1, "online_probe_size": 500},
        "search": {"algorithm": "random", "num_samples": args.trials, "seed": seed, "max_concurrent": args.cpus,
                   "metrics": dict(OBJECTIVES), "scheduler": scheduler, "max_failures": 0},
        "resources": {"cpu": 1},
    }


def losses(metrics: dict) -> tuple[float, float]:
    """A finished trial's objectives as a point to minimise: (test/mse, -probe/knn/acc)."""
    return metrics["test/mse"], -metrics["probe/knn/acc"]


def run_one(method: str, seed: int, args: argparse.Namespace, root: Path) -> dict:
    from aesweep.service import driver, tracking
    from aesweep.service.pareto import hypervolume_2d
    from aesweep.spec.load import parse_spec

    spec = parse_spec(yaml.safe_dump(spec_data(method, seed, args), sort_keys=False))
    uri = f"sqlite:///{root}/mlflow.db"
    t0 = time.time()
    outcome = driver.run_sweep(spec, storage=str(root / "results"), tracking_uri=uri)
    wall = time.time() - t0
    client = tracking.client(uri)
    ref = (args.ref_mse, -args.ref_acc)
    epoch_times: list[float] = []  # one entry per trained epoch of any trial: when it was reported
    finished: list[tuple[float, tuple[float, float]]] = []  # (end time, objectives) per finished trial
    trials = []
    for run in tracking.children(uri, outcome.state.parent_run_id):
        history = client.get_metric_history(run.info.run_id, "epoch")
        epoch_times += [m.timestamp / 1000 for m in history]
        status = tracking.trial_status(run)
        trials.append({"status": status, "epochs": len(history), "config": {
            k: run.data.params.get(k) for k in ("objective.variant", "model.latent_dim", "model.width", "train.lr")}})
        if status == "finished" and all(k in run.data.metrics for k in OBJECTIVES):
            finished.append((run.info.end_time / 1000, losses(run.data.metrics)))
    epoch_times.sort()
    finished.sort()
    curve = []
    for i, (end, _) in enumerate(finished):
        spent = sum(1 for t in epoch_times if t <= end + 1e-3)
        curve.append((spent, hypervolume_2d([p for _, p in finished[:i + 1]], ref)))
    total = len(epoch_times)
    return {"method": method, "seed": seed, "wall": wall, "trial_epochs": total, "counts": outcome.counts,
            "hv": hypervolume_2d([p for _, p in finished], ref), "curve": curve, "trials": trials,
            "front": [p for _, p in finished]}


def hv_at(curve: list[tuple[int, float]], budget: float) -> float:
    """The hypervolume a sweep had reached once it had spent ``budget`` trial-epochs (0 before its first finish);
    past its end, its final value."""
    value = 0.0
    for spent, hv in curve:
        if spent > budget:
            break
        value = hv
    return value


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {sd:.4f}"


def plot(results: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    top = max(r["trial_epochs"] for r in results)
    grid = np.arange(0, top + 1)
    labels = {"none": "no early stopping", "asha": "ASHA on val/loss", "moasha": "MO-ASHA (val/mse, val kNN acc)"}
    for method in METHODS:
        runs = [r for r in results if r["method"] == method]
        curves = np.array([[hv_at(r["curve"], b) for b in grid] for r in runs])
        end = max(r["trial_epochs"] for r in runs)
        keep = grid <= end
        line, = ax.step(grid[keep], curves.mean(0)[keep], where="post", label=labels[method])
        ax.fill_between(grid[keep], curves.min(0)[keep], curves.max(0)[keep], step="post", alpha=0.2,
                        color=line.get_color())
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel(f"hypervolume (test/mse, probe/knn/acc), ref ({args.ref_mse}, {args.ref_acc})")
    ax.set_title(f"Fashion-MNIST, {args.trials} random-search trials x {args.epochs} epochs, "
                 f"{len(runs)} seeds", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--rf", type=float, default=3.0)
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--ref-mse", type=float, default=0.15)
    p.add_argument("--ref-acc", type=float, default=0.1)
    p.add_argument("--plot", type=Path, default=Path("docs/moasha_hypervolume.png"))
    p.add_argument("--json", type=Path, default=None, help="also write every sweep's figures here")
    args = p.parse_args()
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import ray

    print(f"# {os.cpu_count()} CPUs, local Ray with {args.cpus} CPUs; {args.trials} trials x {args.epochs} epochs, "
          f"rf {args.rf}, Fashion-MNIST {args.train_size} train / {args.test_size} test; seeds {args.seeds}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    from aesweep.service import loopback

    loopback.pin_environment()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             **loopback.init_kwargs())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method in METHODS:
                r = run_one(method, seed, args, Path(tmp) / f"{method}-{seed}")
                results.append(r)
                print(f"# seed {seed} {method}: {r['trial_epochs']} trial-epochs, hv {r['hv']:.4f}, {r['counts']}, "
                      f"wall {r['wall']:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    ray.shutdown()

    by = {m: [r for r in results if r["method"] == m] for m in METHODS}
    base_hv = {r["seed"]: r["hv"] for r in by["none"]}
    base_te = {r["seed"]: r["trial_epochs"] for r in by["none"]}
    mo_te = {r["seed"]: r["trial_epochs"] for r in by["moasha"]}
    print("\n| method | trial-epochs | of no-stopping | final hypervolume | of no-stopping | finished / pruned | "
          "hypervolume at MO-ASHA's trial-epochs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in METHODS:
        rs = by[m]
        te = [r["trial_epochs"] for r in rs]
        hv = [r["hv"] for r in rs]
        te_ratio = [r["trial_epochs"] / base_te[r["seed"]] for r in rs]
        hv_ratio = [r["hv"] / base_hv[r["seed"]] if base_hv[r["seed"]] else float("nan") for r in rs]
        at_mo = [hv_at(r["curve"], mo_te[r["seed"]]) for r in rs]
        fin = statistics.mean(r["counts"].get("finished", 0) for r in rs)
        pr = statistics.mean(r["counts"].get("pruned", 0) for r in rs)
        print(f"| {m} | {statistics.mean(te):.0f} ± {statistics.stdev(te) if len(te) > 1 else 0:.0f} | "
              f"{100 * statistics.mean(te_ratio):.0f}% | {spread(hv)} | {100 * statistics.mean(hv_ratio):.1f}% "
              f"(min {100 * min(hv_ratio):.1f}%) | {fin:.1f} / {pr:.1f} | {spread(at_mo)} |")
    print("\nper seed (trial-epochs, hypervolume):")
    for seed in range(args.seeds):
        cells = [f"{m} {r['trial_epochs']} / {r['hv']:.4f}" for m in METHODS for r in by[m] if r["seed"] == seed]
        print(f"  seed {seed}: " + ", ".join(cells))
    plot(results, args.plot, args)
    print(f"\nplot: {args.plot}")
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
