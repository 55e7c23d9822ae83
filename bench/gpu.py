"""GPU throughput: aesweep's training loop on one CUDA GPU, alone and with N trials packed per GPU (1, 2, 4, 8).

Needs a CUDA GPU; without one it exits with status 2 and says so. Two parts, in one run:

1. loop: images/second of aesweep's training loop on the GPU (the same code bench/train_throughput.py times:
   the baseline's ConvAutoencoder from shared/baselines/naive_train.py, real Fashion-MNIST as one uint8 tensor
   on the GPU, ``train.make_loop`` + ``train._train_epoch``), for fp32 / bf16 autocast, channels_last on / off,
   torch.compile off / on: what each fast path is worth on this GPU.
2. packing: real sweeps (``aesweep.service.driver.run_sweep``, local Ray with this machine's CPUs and 1 GPU, temporary
   MLflow store) of --trials identical trials of the CIFAR-10 study's conv AE (width 1) on Fashion-MNIST, with
   ``resources.gpu = 1/N`` (and ``resources.cpu = CPUs/N``) for N in --pack: all trials do the same work, so
   wall time after start-up and the aggregate images/second compare directly; speed-up is against N = 1.

    python bench/gpu.py [--pack 1 2 4 8] [--trials 8] [--epochs 2] [--train-size 20000] [--steps 300]
                        [--skip-loop] [--skip-pack]

Through the project's device tool (the repository root is the working directory there):
    python bench/gpu.py > $OUT/gpu.txt
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOOP_CONFIGS = [  # label, TrainConfig overrides, channels_last
    ("fp32, NCHW", {}, False),
    ("fp32, channels_last (the CUDA default)", {}, True),
    ("bf16 autocast, NCHW", {"precision": "bf16"}, False),
    ("bf16 autocast, channels_last", {"precision": "bf16"}, True),
    ("bf16 autocast, channels_last, torch.compile", {"precision": "bf16", "compile": True}, True),
]


def loop_throughput(steps: int, warmup: int, batch: int) -> list[tuple[str, float]]:
    from train_throughput import baseline_model

    from aesweep.data import datasets
    from aesweep.spec import variants
    from aesweep.spec.trial import DatasetConfig, TrialConfig
    from aesweep.training import train

    device = torch.device("cuda")
    with tempfile.TemporaryDirectory() as root:
        dataset = datasets.load_dataset(DatasetConfig(name="fashion_mnist", root=root, download=False,
                                                     val_fraction=0.0), device)
    need = (warmup + steps) * batch
    if need > len(dataset.train):
        raise SystemExit(f"--steps {steps} + warm-up at batch {batch} needs {need} images; the split has "
                         f"{len(dataset.train)}")
    out = []
    for label, overrides, channels_last in LOOP_CONFIGS:
        torch.manual_seed(0)
        cfg = TrialConfig.model_validate({"objective": {"variant": "ae"},
                                          "train": {"batch_size": batch, "lr": 1e-3, **overrides}})
        model = baseline_model()
        loop = train.make_loop(cfg, model, variants.compose("ae", {}), True, device, channels_last=channels_last)
        generator = torch.Generator(device=device).manual_seed(0)

        def epoch(rows: slice, number: int, model=model, loop=loop, cfg=cfg, generator=generator) -> None:
            train._train_epoch(model, loop, dataset.train[rows], cfg, generator, number, None)

        epoch(slice(0, warmup * batch), 1)  # includes the compilation when compiling
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        epoch(slice(warmup * batch, need), 2)
        torch.cuda.synchronize()
        out.append((label, steps * batch / (time.perf_counter() - t0)))
        print(f"# loop {label}: {out[-1][1]:.0f} img/s", flush=True)
    return out


def packed_sweep(n: int, trials: int, epochs: int, train_size: int, root: Path) -> dict[str, float]:
    from aesweep.service import driver, tracking
    from aesweep.spec.load import parse_spec

    cpus = os.cpu_count() or 1
    data = {
        "name": f"pack{n}",
        "dataset": {"name": "fashion_mnist", "train_size": train_size, "test_size": 2000, "val_fraction": 0.1},
        "model": {"backbone": "conv", "width": 1.0, "latent_dim": 64},
        "objective": {"variant": "ae"},
        "train": {"epochs": epochs, "batch_size": 128, "precision": "bf16", "early_stopping": {"patience": None},
                  "lr": {"grid": [1e-3 * (1 + i / 10) for i in range(trials)]}},
        "eval": {"metrics": ["mse", "psnr"], "probes": ["logreg", "knn"], "clustering": [], "figures": []},
        "search": {"algorithm": "grid", "metrics": {"val/loss": "min"}, "max_concurrent": n},
        "resources": {"cpu": max(1, cpus // n) if cpus >= n else cpus / n, "gpu": 1 / n},
    }
    uri = f"sqlite:///{root}/mlflow.db"
    t0 = time.time()
    outcome = driver.run_sweep(parse_spec(yaml.safe_dump(data)), storage=str(root / "results"), tracking_uri=uri)
    wall = time.time() - t0
    runs = tracking.children(uri, outcome.state.parent_run_id)
    done = [r for r in runs if r.info.status == "FINISHED"]
    if len(done) != trials:
        raise SystemExit(f"pack {n}: {len(done)} of {trials} trials finished ({outcome.counts})")
    start = min(r.info.start_time for r in runs) / 1000 - t0
    images = trials * epochs * int(train_size * 0.9)
    return {"wall": wall, "startup": start, "img_s": images / (wall - start),
            "train_s": statistics.median(r.data.metrics["time/train_s"] for r in runs),
            "eval_s": statistics.median(r.data.metrics["time/eval_s"] for r in runs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--skip-loop", action="store_true")
    p.add_argument("--skip-pack", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False here "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a GPU machine; "
              "bench/train_throughput.py measures the CPU.", file=sys.stderr)
        raise SystemExit(2)
    os.environ.pop("RAY_ADDRESS", None)
    name = torch.cuda.get_device_name(0)
    print(f"# {name}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}", flush=True)
    a = torch.randn(4096, 4096, device="cuda")
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            x @ x
        torch.cuda.synchronize()
        print(f"# matmul 4096^3 {dtype}: {20 * 2 * 4096**3 / (time.perf_counter() - t0) / 1e12:.1f} TFLOP/s")

    if not args.skip_loop:
        rows = loop_throughput(args.steps, args.warmup, args.batch)
        base = rows[0][1]
        print(f"\n| training loop (baseline ConvAutoencoder, batch {args.batch}) | images/s | vs fp32 |")
        print("|---|---:|---:|")
        for label, rate in rows:
            print(f"| {label} | {rate:.0f} | {rate / base:.2f}x |")

    if not args.skip_pack:
        import ray

        from aesweep.service import loopback

        loopback.pin_environment()
        ray.init(num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, **loopback.init_kwargs())
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.pack:
                results[n] = packed_sweep(n, args.trials, args.epochs, args.train_size, Path(tmp) / f"pack{n}")
                r = results[n]
                print(f"# pack {n}: wall {r['wall']:.1f} s, start-up {r['startup']:.1f} s, "
                      f"{r['img_s']:.0f} img/s", flush=True)
        ray.shutdown()
        one = results[args.pack[0]]
        print(f"\n| trials per GPU | wall s ({args.trials} trials) | start-up s | aggregate images/s | speed-up | "
              "median trial train s | median trial eval s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, r in results.items():
            print(f"| {n} | {r['wall']:.1f} | {r['startup']:.1f} | {r['img_s']:.0f} | {r['img_s'] / one['img_s']:.2f}x | "
                  f"{r['train_s']:.1f} | {r['eval_s']:.1f} |")
    print(f"\n# load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
