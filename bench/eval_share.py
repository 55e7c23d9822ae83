"""Evaluation share: a trial's evaluation (metrics, probes, clustering, figures) against its training, full size.

What it measures: one trial of a shipped sweep (default ``sweeps/cifar.yaml``: the CIFAR-10 study's conv AE,
six reconstruction metrics, logistic-regression / MLP / random-forest / kNN probes, k-means / GMM / HDBSCAN,
four figures) run by ``train.run_trial`` for one epoch, on a CIFAR-10-shaped dataset at full size:
45,000 train / 5,000 validation / 10,000 test images of 3x32x32. Real CIFAR-10 is used when its files are in
the data root; otherwise (this machine cannot download it) real Fashion-MNIST images zero-padded to 32x32 and
repeated over three channels stand in, so that the probes and clusterers see real class structure.

Evaluation cost does not depend on the train split beyond the probes' row bound (``eval.subsample``, 10,000 by
default): the trial trains on --train-images images (default 11,000, above the bound), which keeps the
measurement short, and the table projects training to the full 45,000-image epoch at the measured rate:

    share = time/eval_s / (epochs x 45,000 / measured training images per second)

for the spec's ``train.epochs`` (an upper bound: early stopping may end sooner; --epochs changes it).

    python bench/eval_share.py [--spec sweeps/cifar.yaml] [--set objective.variant=vae --set model.latent_dim=2048]
                               [--train-images 11000] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from aesweep.data import datasets, files
from aesweep.registry import DATASETS
from aesweep.spec.load import load_spec
from aesweep.spec.trial import DatasetConfig
from aesweep.training import train

REPO = Path(__file__).resolve().parents[1]
FULL_TRAIN, VAL, TEST = 45_000, 5_000, 10_000


def cifar_shaped(train_images: int) -> tuple[datasets.Dataset, str]:
    """Real CIFAR-10 if present, else Fashion-MNIST padded to 3x32x32; train / 5k val / 10k test."""
    try:
        source = DATASETS.get("cifar10")(DatasetConfig(name="cifar10", download=False))
        what = "CIFAR-10"
        train_split, test_split, names = source.train, source.test, source.class_names
    except files.DataError:
        with tempfile.TemporaryDirectory() as root:
            source = DATASETS.get("fashion_mnist")(DatasetConfig(name="fashion_mnist", root=root,
                                                                         download=False))
        what = "Fashion-MNIST padded to 3x32x32 (CIFAR-10 not found in the data root)"

        def widen(split: datasets.Split) -> datasets.Split:
            images = torch.nn.functional.pad(split.images, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()
            return datasets.Split(images, split.labels)

        train_split, test_split, names = widen(source.train), widen(source.test), source.class_names
    order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(0))
    dataset = datasets.Dataset("cifar-shaped", train_split[order[VAL:VAL + train_images].sort().values],
                              train_split[order[:VAL].sort().values], test_split[:TEST], tuple(names), flip_ok=True)
    return dataset, what


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(REPO / "sweeps" / "cifar.yaml"))
    p.add_argument("--set", action="append", default=[], help="spec override, as `aesweep run --set`")
    p.add_argument("--train-images", type=int, default=11_000)
    p.add_argument("--epochs", type=int, default=None, help="epochs to project to (default: the spec's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_spec(Path(args.spec), args.set).resolve()  # first value of every distribution, overrides applied
    epochs = args.epochs or cfg.train.epochs
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    dataset, what = cifar_shaped(args.train_images)
    print(f"# {Path(args.spec).name}: variant {cfg.objective.variant}, latent {cfg.model.latent_dim}, backbone "
          f"{cfg.model.backbone} width {cfg.model.width}; data: {what}; train {len(dataset.train)} (projected to "
          f"{FULL_TRAIN}) / val {len(dataset.val)} / test {len(dataset.test)}; {args.threads} threads, "
          f"device {train.pick_device(cfg.train.device)}")
    print(f"# eval: metrics {cfg.eval.metrics}, probes {cfg.eval.probes}, clustering {cfg.eval.clustering}, "
          f"figures {cfg.eval.figures}, with_logvar {cfg.eval.with_logvar}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = train.run_trial(cfg, dataset=dataset, workdir=work)
    if result.status != "finished":
        raise SystemExit(f"trial {result.status}: {result.reason}")
    m = result.metrics
    rate = len(dataset.train) / m["time/train_s"]
    epoch_s = FULL_TRAIN / rate
    print(f"# whole run {time.perf_counter() - t0:.0f} s; load average at end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| part | seconds |")
    print("|---|---:|")
    parts = sorted(k for k in m if k.startswith(("time/eval/", "time/probe/", "time/cluster/")))
    for key in parts:
        print(f"| {key.removeprefix('time/')} | {m[key]:.1f} |")
    print(f"| **eval (time/eval_s)** | **{m['time/eval_s']:.1f}** |")
    print("\n| training images/s | full epoch s | epochs | time/train_s (projected) | time/eval_s | eval / train |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sorted({epochs, 10}):
        print(f"| {rate:.0f} | {epoch_s:.0f} | {n} | {n * epoch_s:.0f} | {m['time/eval_s']:.0f} | "
              f"{m['time/eval_s'] / (n * epoch_s):.3f} |")


if __name__ == "__main__":
    main()
