"""Training throughput: aesweep's training loop vs the naive DataLoader loop and its model-only compute ceiling.

What it measures, in one run: images/second of three training loops with the same model, data, threads, batch
and step counts, each in a fresh process, timed by wall clock over --steps optimiser steps after --warmup steps:

- naive: ``shared/baselines/naive_train.py`` as shipped (torchvision FashionMNIST + ToTensor, a DataLoader with
  --workers worker processes, Adam, MSELoss), run as a subprocess;
- model_only: the same script with ``--model-only``: the same step on one fixed random batch, no data loading at
  all. The compute ceiling of that step on this machine;
- aesweep: the baseline's ``ConvAutoencoder`` (imported from naive_train.py by path, not copied) trained by
  aesweep's own loop: ``data.load_dataset`` (the whole split as one uint8 tensor), ``train.make_loop`` (optimiser,
  stepper, fast paths: what ``run_trial`` builds) and ``train._train_epoch`` (the loop ``run_trial`` runs: index
  batches, uint8 -> float on the device, objective, backward, Adam, loss checks), run in a subprocess of this
  script. The model is wrapped only to return aesweep's ``AEOutput``; the objective is the plain AE's MSE.

The machine may be shared, so the three run --rounds times in rotating order and the table shows the median of
each (the per-round numbers and the load average are printed too).

    python bench/train_throughput.py [--steps 150] [--warmup 10] [--batch 128] [--threads 2] [--workers 2]
                                     [--rounds 3] [--ours LABEL=key=value,...]
    --ours adds an aesweep row with TrainConfig overrides, e.g. --ours compiled=compile=true
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "naive_train.py"
RATE = re.compile(r"img_per_s=([0-9.]+)")


def load_baseline(path: Path = BASELINE):
    spec = importlib.util.spec_from_file_location("naive_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_model():
    """naive_train.ConvAutoencoder (latent 32) behind aesweep's model interface (forward -> AEOutput): the same
    modules, the same compute. Shared by this benchmark and bench/gpu.py."""
    import torch
    from torch import nn

    from aesweep.models.model import AEOutput

    naive = load_baseline()

    class BaselineAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ae = naive.ConvAutoencoder(latent=32)

        def forward(self, x: torch.Tensor) -> AEOutput:
            z = self.ae.encoder(x)
            return AEOutput(x_hat=self.ae.decoder(z), z=z, feature=z)

    return BaselineAE()


def run_ours(args: argparse.Namespace) -> None:
    """The aesweep row, in this (fresh) process: prints ``aesweep img_per_s=...`` like the baseline does."""
    import torch

    from aesweep.data import datasets
    from aesweep.spec import variants
    from aesweep.spec.trial import TrialConfig
    from aesweep.training import train

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set if item)
    with tempfile.TemporaryDirectory() as root:  # the loader extracts the verified IDX files into its root
        cfg = TrialConfig.model_validate({
            "dataset": {"name": "fashion_mnist", "root": root, "download": False, "val_fraction": 0.0},
            "objective": {"variant": "ae", "recon": "mse"},
            "train": {"batch_size": args.batch, "lr": 1e-3, "optimizer": "adam", "seed": args.seed,
                      **{k: _yaml(v) for k, v in overrides.items()}},
        })
        device = train.pick_device(cfg.train.device)
        dataset = datasets.load_dataset(cfg.dataset, device)  # all 60000 train images, one uint8 tensor
    objective = variants.compose("ae", {})
    model = baseline_model()
    loop = train.make_loop(cfg, model, objective, dataset.flip_ok, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)

    def epoch(rows: slice, number: int) -> dict[str, float]:
        return train._train_epoch(model, loop, dataset.train[rows], cfg, generator, number, None)

    t0 = time.perf_counter()
    epoch(slice(0, args.warmup * args.batch), 1)  # includes torch.compile's compilation when compiling
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    # _train_epoch ends with a host read of the loss sums, so the clock stops after the last step ran.
    metrics = epoch(slice(args.warmup * args.batch, (args.warmup + args.steps) * args.batch), 2)
    elapsed = time.perf_counter() - t0
    print(f"# loss={metrics['train/loss']:.5f} seconds={elapsed:.3f} warmup_seconds={warmup_s:.1f} "
          f"threads={args.threads} device={device} overrides={overrides or {}}")
    print(f"aesweep img_per_s={args.steps * args.batch / elapsed:.1f} steps={args.steps} batch={args.batch}")


def _yaml(value: str):
    import yaml

    return yaml.safe_load(value)


def measure(cmd: list[str]) -> tuple[float, str]:
    """(images/s, the warm-up seconds it printed or "")."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = RATE.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-3000:]}")
    warm = re.search(r"warmup_seconds=([0-9.]+)", out.stdout)
    return float(match.group(1)), f", warm-up {warm.group(1)} s" if warm else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="the naive loop's DataLoader workers (its default: 2)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ours", action="append", default=[], metavar="LABEL=KEY=VALUE,...",
                   help="an extra aesweep row with TrainConfig overrides (repeatable)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: run the aesweep row
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        run_ours(args)
        return

    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
              "--threads", str(args.threads), "--seed", str(args.seed)]
    naive = [sys.executable, str(BASELINE), "--root", args.root, "--workers", str(args.workers), *common]
    ours = [sys.executable, __file__, "--worker", *common]
    rows: dict[str, list[str]] = {"naive": naive, "model_only": [*naive, "--model-only"], "aesweep": ours}
    for item in args.ours:
        label, _, sets = item.partition("=")
        rows[f"aesweep {label}"] = [*ours, *(x for kv in sets.split(",") if kv for x in ("--set", kv))]

    import torch

    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, threads {args.threads}, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, naive DataLoader workers {args.workers}, "
          f"{args.rounds} rounds; baseline {BASELINE}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order: load drifts
            rate, warm = measure(rows[name])
            rates[name].append(rate)
            print(f"# round {r + 1} {name}: {rate:.0f} img/s{warm} (load {os.getloadavg()[0]:.2f})", flush=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    print("\n| loop | images/s (median) | per round | vs naive | vs model_only |")
    print("|---|---:|---|---:|---:|")
    for name in names:
        print(f"| {name} | {med[name]:.0f} | {' / '.join(f'{v:.0f}' for v in rates[name])} | "
              f"{med[name] / med['naive']:.2f}x | {med[name] / med['model_only']:.2f}x |")
    print(f"\n# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
