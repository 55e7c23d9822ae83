"""Sweep overhead: seconds per trial that Ray Tune + MLflow + checkpointing add, and 1 vs 2 concurrent trials.

What it measures, in one run, with ``aesweep.service.driver.run_sweep`` on a local Ray (--cpus CPUs), a temporary sqlite
MLflow store and a temporary storage directory:

1. overhead: a --trials-trial grid of trivially short trials (the test suite's TINY trial: 320 generated shapes,
   a narrow MLP, 1 epoch, mse/psnr/ssim, a kNN probe, one figure), one at a time. For the sweep,
       startup   = first trial's MLflow child-run start - run_sweep call (Ray actor start, worker imports,
                   MLflow parent run, searcher);
       compute   = sum over trials of ``time/total_s`` (run_trial's own clock: data to device, build, train,
                   evaluate, figures, weights);
       overhead per trial = (sweep wall - startup - compute) / trials
   i.e. everything a trial costs outside run_trial after start-up: scheduling, the trainable's set-up, the MLflow
   child run (creation, params, per-epoch and final metrics, artifacts), checkpoints and Tune's bookkeeping.
   (With 2 at a time, compute / 2 stands in for compute.) The first trial's ``time/total_s`` includes the imports
   that evaluation pays once per worker (torchmetrics, scikit-learn, matplotlib), so a second measure leaves the
   first trial out: the steady-state gap, with one trial at a time,
       gap = next trial's child-run start - this trial's child-run start - this trial's time/total_s,
   median over trials 2..N-1.
2. concurrency: the same number of compute-bound trials (a conv AE, --bound-epochs epochs of --bound-images
   images, one intra-op thread each: ``resources.cpu: 1``) with ``search.max_concurrent`` 1 and then 2: wall
   times and their ratio (2.0 is perfect on 2 cores).

Ray is started once (its start-up is printed, not counted); each sweep then starts its own trial actors (actor
reuse within a sweep keeps one process and one cached dataset per concurrent trial).

    python bench/sweep_overhead.py [--trials 16] [--cpus 2] [--bound-epochs 3] [--bound-images 2000]
                                   [--skip-concurrency]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

LEARNING_RATES = [1e-3 * (1 + i / 10) for i in range(64)]  # the grid axis: distinct, otherwise irrelevant values

SHORT = {
    "dataset": {"name": "shapes", "train_size": 320, "test_size": 64, "val_fraction": 0.2},
    "model": {"backbone": "mlp", "width": 0.125, "latent_dim": 4},
    "objective": {"variant": "ae"},
    "train": {"epochs": 1, "batch_size": 64, "early_stopping": {"patience": None}},
    "eval": {"metrics": ["mse", "psnr", "ssim"], "probes": ["knn"], "clustering": [], "figures": ["reconstructions"]},
    "resources": {"cpu": 1},
}


def bound(epochs: int, images: int) -> dict:
    """A compute-bound trial: a conv AE trained for a few seconds, cheap evaluation."""
    return {
        "dataset": {"name": "shapes", "train_size": images, "test_size": 256, "val_fraction": 0.1},
        "model": {"backbone": "conv", "width": 0.25, "latent_dim": 16},
        "objective": {"variant": "ae"},
        "train": {"epochs": epochs, "batch_size": 128, "early_stopping": {"patience": None}},
        "eval": {"metrics": ["mse"], "probes": [], "clustering": [], "figures": []},
        "resources": {"cpu": 1},
    }


def sweep(name: str, trial: dict, trials: int, concurrent: int, root: Path) -> dict:
    """Run one sweep; wall, start-up and compute seconds (definitions in the module docstring)."""
    from aesweep.service import driver, tracking
    from aesweep.spec.load import parse_spec

    data = {"name": name, **trial,
            "train": {**trial["train"], "lr": {"grid": LEARNING_RATES[:trials]}},
            "search": {"algorithm": "grid", "metrics": {"val/loss": "min"}, "max_concurrent": concurrent}}
    spec = parse_spec(yaml.safe_dump(data))
    uri = f"sqlite:///{root}/mlflow.db"
    t0 = time.time()
    outcome = driver.run_sweep(spec, storage=str(root / "results"), tracking_uri=uri)
    wall = time.time() - t0
    runs = tracking.children(uri, outcome.state.parent_run_id)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if len(finished) != trials:
        raise SystemExit(f"{name}: {len(finished)} of {trials} trials finished: {outcome.counts}")
    runs = sorted(runs, key=lambda r: r.info.start_time)
    starts = [r.info.start_time / 1000 for r in runs]
    compute = sum(r.data.metrics["time/total_s"] for r in runs)
    gaps = [starts[i + 1] - starts[i] - runs[i].data.metrics["time/total_s"] for i in range(1, len(runs) - 1)]
    return {"wall": wall, "startup": starts[0] - t0, "compute": compute,
            "gap": statistics.median(gaps) if concurrent == 1 and gaps else float("nan"),
            "trial_s": statistics.median(r.data.metrics["time/total_s"] for r in runs),
            "span": [(r.info.start_time / 1000 - t0, r.info.end_time / 1000 - t0) for r in runs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--bound-epochs", type=int, default=3)
    p.add_argument("--bound-images", type=int, default=2000)
    p.add_argument("--skip-concurrency", action="store_true")
    args = p.parse_args()
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import ray

    print(f"# {os.cpu_count()} CPUs, local Ray with {args.cpus} CPUs, {args.trials} trials per sweep")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    t0 = time.time()
    from aesweep.service import loopback

    loopback.pin_environment()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             **loopback.init_kwargs())
    print(f"# ray.init: {time.time() - t0:.1f} s (not counted)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("short-c1", SHORT, 1), ("short-c2", SHORT, 2)]
        if not args.skip_concurrency:
            trial = bound(args.bound_epochs, args.bound_images)
            plan += [("bound-c1", trial, 1), ("bound-c2", trial, 2)]
        for name, trial, concurrent in plan:
            root = Path(tmp) / name
            result = sweep(name, trial, args.trials, concurrent, root)
            per_trial = (result["wall"] - result["startup"] - result["compute"] / concurrent) / args.trials
            rows.append((name, concurrent, result, per_trial))
            print(f"# {name}: wall {result['wall']:.1f} s, start-up {result['startup']:.1f} s, compute "
                  f"{result['compute']:.1f} s (median trial {result['trial_s']:.2f} s), "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    ray.shutdown()

    print("\n| sweep | trials | concurrent | wall s | start-up s | sum of trial compute s | median trial s | "
          "overhead s / trial | steady-state gap s / trial |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, concurrent, r, per_trial in rows:
        gap = "-" if r["gap"] != r["gap"] else f"{r['gap']:.2f}"
        print(f"| {name} | {args.trials} | {concurrent} | {r['wall']:.1f} | {r['startup']:.1f} | {r['compute']:.1f} | "
              f"{r['trial_s']:.2f} | {per_trial:.2f} | {gap} |")
    walls = {name: r["wall"] - r["startup"] for name, _, r, _ in rows}
    print("\n| trials | wall after start-up, 1 at a time s | 2 at a time s | speed-up |")
    print("|---|---:|---:|---:|")
    for kind in ("short", "bound"):
        if f"{kind}-c1" in walls:
            one, two = walls[f"{kind}-c1"], walls[f"{kind}-c2"]
            print(f"| {kind} | {one:.1f} | {two:.1f} | {one / two:.2f}x |")
    print(f"\n# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
