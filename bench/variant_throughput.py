"""Training throughput of every variant: images/second of aesweep's training step.

What it measures: the conv backbone (width 1: the six-block 64..256-channel AE of the CIFAR-10 study) at batch 128
on 28x28x1 images (real Fashion-MNIST when the Debian files are present, else generated shapes), timed over
--steps optimiser steps after --warmup steps, with the same step the training loop runs (augmentation, corruption,
forward, every loss term, backward, Adam, and an adversary's own update where the variant trains one). Two-view
variants (contrastive, supcon) run two forward passes per image, so about half the throughput is expected of
them. The last column is the throughput against the plain AE's first row in the same run (the AE runs
again last; the closing line divides by the mean of both): the cost of each family's
objective (FactorVAE's discriminator: the paper's 5 x 1000 hidden layers; IWAE: iwae_samples extra decodes;
beta-TCVAE: its B x B x D estimate of q(z)).

    python bench/variant_throughput.py [--steps 5] [--warmup 2] [--batch 128] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from aesweep.data import batches as batches_mod
from aesweep.data import datasets
from aesweep.spec import variants
from aesweep.spec.load import parse_spec
from aesweep.spec.trial import DatasetConfig
from aesweep.training.train import adversary_step, build, make_loop

# Knobs a variant has no default for (FactorVAE's discriminator: the paper's, 6 layers of 1000 units).
REQUIRED = {"factorvae": ", discriminator: {widths: [1000, 1000, 1000, 1000, 1000]}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    # The trained variants (the baselines are fitted, not stepped).
    p.add_argument("--variants", nargs="*", default=[v.name for v in variants.PRESETS if v.fit is None])
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    name = "fashion_mnist" if os.path.isdir("/usr/share/datasets/fashion-mnist") else "shapes"
    n = args.batch * (args.steps + args.warmup)
    dataset = datasets.load_dataset(DatasetConfig(name=name, train_size=n, test_size=args.batch, val_fraction=0.0))
    print(f"# dataset {name} 28x28x1, conv width {args.width}, batch {args.batch}, {args.threads} threads, "
          f"torch {torch.__version__}, {args.steps} timed steps after {args.warmup} warm-up")
    print("| variant | parameters | images/s | s/step | vs ae |")
    print("|---|---:|---:|---:|---:|")
    rates: dict[str, list[float]] = {}
    # The plain AE first and again last: the ratios divide by the mean of both, so that a drift of the machine
    # over the run (load, clocks) shows as the gap between them rather than biasing every ratio one way.
    for variant in ["ae", *[v for v in args.variants if v != "ae"], "ae"]:
        trial = parse_spec(
            f"name: bench\ndataset: {{name: {name}}}\nobjective: {{variant: '{variant}'{REQUIRED.get(variant, '')}}}\n"
            f"model: {{backbone: conv, width: {args.width}, latent_dim: 32}}\ntrain: {{batch_size: {args.batch}}}\n"
        ).resolve()
        model, objective = build(trial, dataset)
        loop = make_loop(trial, model, objective, dataset.flip_ok, torch.device("cpu"))  # run_trial's fast paths
        optimizer, step = loop.optimizer, loop.stepper
        generator = torch.Generator().manual_seed(0)
        model.train()
        batches = list(batches_mod.iterate_batches(dataset.train, args.batch, shuffle=False))
        for i, batch in enumerate(batches):
            if i == args.warmup:
                start = time.perf_counter()
            total, _, out = step(batch.images, batch.labels, generator)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            adversary_step(model, loop, out)
        seconds = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        rate = args.steps * args.batch / seconds
        rates.setdefault(variant, []).append(rate)
        print(f"| {variant} | {params / 1e6:.2f} M | {rate:.0f} | {seconds / args.steps:.2f} | "
              f"{rate / rates['ae'][0]:.2f} |", flush=True)
    ae = sum(rates["ae"]) / len(rates["ae"])
    print(f"# ae first {rates['ae'][0]:.0f}, last {rates['ae'][-1]:.0f} images/s; against their mean {ae:.0f}: "
          + ", ".join(f"{v} {r[0] / ae:.2f}" for v, r in rates.items() if v != "ae"))


if __name__ == "__main__":
    main()
