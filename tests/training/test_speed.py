"""The fast paths compute what the ordinary code computes (functional equivalence only; no timing asserts).

- the data path (whole split as one uint8 tensor, index batches, uint8 -> float on the device) gives, for a fixed
  seed, exactly the batches of the ordinary per-sample torchvision path (PIL image, ``ToTensor``) in the same
  order;
- the channels_last layout (the default for conv models) trains to the same losses as the NCHW layout;
- the single pass over the test split at the end of a trial gives the same ``test/<metric>`` values as the
  separate ``metrics.reconstruction_metrics`` pass it replaced;
- ``train.compile`` parses and ``auto`` leaves the CPU eager;
- a packed run: two trials of ``resources.cpu: 0.5`` on a one-CPU Ray run at once (overlapping MLflow runs).

The torch probe paths against scikit-learn within 1 point (logistic regression, kNN, k-means on real
Fashion-MNIST features) are in tests/evaluation/test_probes.py (``test_torch_*_match_sklearn_on_fashion_mnist``).
"""
from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import pytest
import torch

from aesweep.data import batches as batches_mod
from aesweep.data import datasets
from aesweep.evaluation import metrics
from aesweep.evaluation.evaluate import embed
from aesweep.service import loopback
from aesweep.spec.load import parse_spec
from aesweep.spec.trial import DatasetConfig, TrialConfig
from aesweep.training import train
from tests.conftest import load, write_spec

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def trial(variant: str = "ae", backbone: str = "conv", **train_cfg) -> TrialConfig:
    resolved = parse_spec(
        "name: speed\n"
        "dataset: {name: shapes, train_size: 320, test_size: 96, val_fraction: 0.2}\n"
        f"model: {{backbone: {backbone}, width: 0.125, latent_dim: 8}}\n"
        f"objective: {{variant: '{variant}'}}\n"
        "train: {epochs: 2, batch_size: 32, lr: 3.0e-3}\n"
        "eval: {metrics: [mse, rmse, mae, psnr, ssim, uqi, ergas, bce], probes: [], clustering: [], figures: []}\n"
    ).resolve()
    return resolved.model_copy(update={"train": resolved.train.model_copy(update=train_cfg)})


# --------------------------------------------------------------------------------------------------------------
# Data path


def test_fast_batches_equal_the_torchvision_per_sample_path_for_a_fixed_seed():
    """Our shuffled batches of real Fashion-MNIST, as floats, are exactly torchvision's ``dataset[i]`` through
    ``ToTensor`` for the rows of the same seeded permutation."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST} (Debian package dataset-fashion-mnist)")
    import torchvision
    from torchvision import transforms

    with tempfile.TemporaryDirectory() as root:
        ds = datasets.load_dataset(DatasetConfig(name="fashion_mnist", root=root, download=False, val_fraction=0.0))
        reference = torchvision.datasets.FashionMNIST(root, train=True, download=False,
                                                      transform=transforms.ToTensor())
        split = ds.train[:2000]  # upstream order: no subset, no validation carve
        batch_size, seed = 128, 3
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
        batches = batches_mod.iterate_batches(split, batch_size, shuffle=True,
                                          generator=torch.Generator().manual_seed(seed))
        for b, batch in enumerate(batches):
            rows = order[b * batch_size:(b + 1) * batch_size]
            if b % 5 == 0:  # the PIL path is slow; every fifth batch checks all its rows
                expected = torch.stack([reference[int(i)][0] for i in rows])
                assert torch.equal(batches_mod.to_float(batch.images), expected)
            assert torch.equal(batch.labels, reference.targets[rows])
        assert b == math.ceil(2000 / batch_size) - 1


def test_stepper_input_is_to_float_in_either_layout():
    cfg = trial()
    ds = datasets.load_dataset(cfg.dataset)
    images = ds.train.images[:16]
    seen = []
    for channels_last in (False, True):
        model, objective = train.build(cfg, ds)
        loop = train.make_loop(cfg, model, objective, ds.flip_ok, torch.device("cpu"), channels_last=channels_last)
        loop.stepper.forward = lambda x, model=model: seen.append(x) or model(x)
        loop.stepper(images, ds.train.labels[:16], torch.Generator().manual_seed(0))
    assert seen[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(seen[0], images.float() / 255) and torch.equal(seen[1], seen[0])


@pytest.mark.parametrize("backbone", ["conv", "resnet"])
def test_channels_last_trains_and_evaluates_like_nchw(backbone):
    """channels_last (NHWC) and NCHW on the same weights: the same training step (loss, and gradients pointing the
    same way), then, after an epoch, the same validation pass and embeddings (eval mode: no batch statistics)."""
    cfg = trial(backbone=backbone)
    ds = datasets.load_dataset(cfg.dataset)
    loops = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model, objective = train.build(cfg, ds)
        loops[channels_last] = model, train.make_loop(cfg, model, objective, ds.flip_ok, torch.device("cpu"),
                                                      channels_last=channels_last)
    assert next(p for p in loops[True][0].parameters() if p.ndim == 4 and p.shape[1] > 1).is_contiguous(
        memory_format=torch.channels_last)
    def gradient(model, loop, rows: slice) -> tuple[float, torch.Tensor]:
        model.zero_grad()
        total, _, _ = loop.stepper(ds.train.images[rows], ds.train.labels[rows], torch.Generator().manual_seed(0))
        total.backward()
        return total.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    (loss_cl, g_cl), (loss, g) = gradient(*loops[True], slice(0, 64)), gradient(*loops[False], slice(0, 64))
    _, g_other = gradient(*loops[False], slice(64, 128))
    assert loss_cl == pytest.approx(loss, rel=1e-4)
    # torch's CPU batch norm accumulates NHWC batch statistics less exactly than NCHW ones (~1e-4 relative, about
    # TF32's precision), which moves a few normalised layers' gradients by up to a few percent elementwise. As a
    # whole the gradient is the same direction, and the change is ~1% of what another minibatch changes.
    assert torch.nn.functional.cosine_similarity(g_cl, g, dim=0) > 0.9999
    assert (g_cl - g).norm() < 0.05 * (g_other - g).norm()
    model, loop = loops[False]
    train._train_epoch(model, loop, ds.train, cfg, torch.Generator().manual_seed(0), 1, None)
    loops[True][0].load_state_dict(loops[False][0].state_dict())  # same weights, each model keeps its layout
    val = {cl: train.evaluate_split(loop.stepper, ds.val, 64, "val", 0, metrics=["mse", "ssim"])
           for cl, (_, loop) in loops.items()}
    assert val[True] == pytest.approx(val[False], rel=1e-4, abs=1e-6)
    z = {cl: embed(model, ds.test, cfg.eval) for cl, (model, _) in loops.items()}
    assert torch.allclose(z[True], z[False], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Training and evaluation switches


@pytest.mark.parametrize("variant", ["ae", "denoising", "contrastive"])
def test_one_test_pass_gives_the_reconstruction_metrics_of_a_separate_pass(variant):
    cfg = trial(variant)
    ds = datasets.load_dataset(cfg.dataset)
    torch.manual_seed(0)
    model, objective = train.build(cfg, ds)
    loop = train.make_loop(cfg, model, objective, ds.flip_ok, torch.device("cpu"))
    one_pass = train.evaluate_split(loop.stepper, ds.test, 64, "test", 0, metrics=cfg.eval.metrics)
    separate = metrics.reconstruction_metrics(model, ds.test, cfg.eval.metrics)
    assert set(separate) <= set(one_pass) and "test/loss" in one_pass
    for key, value in separate.items():
        assert one_pass[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_run_trial_reports_test_metrics_once_with_eval_time(tmp_path):
    result = train.run_trial(trial(epochs=1), workdir=tmp_path)
    assert result.status == "finished", result.reason
    m = result.metrics
    for key in ("test/loss", "test/mse", "test/ssim", "test/bce", "time/train_s", "time/eval_s",
                "time/eval/reconstruction_s"):
        assert math.isfinite(m[key]), key
    assert m["time/eval_s"] >= m["time/eval/reconstruction_s"]


def test_compile_switch_parses_and_auto_stays_eager_on_the_cpu():
    for value, expected in (("false", False), ("true", True), ("auto", "auto")):
        assert parse_spec(f"name: c\ntrain: {{compile: {value}}}\n").resolve().train.compile == expected
    assert TrialConfig().train.compile is False
    cfg = trial(compile="auto")
    ds = datasets.load_dataset(cfg.dataset)
    model, objective = train.build(cfg, ds)
    loop = train.make_loop(cfg, model, objective, ds.flip_ok, torch.device("cpu"))
    assert loop.stepper.forward is model and loop.check_every == 1
    assert loop.stepper.memory_format == torch.channels_last  # a conv model: NHWC on any device
    mlp = trial(backbone="mlp")
    model, objective = train.build(mlp, ds)
    assert train.make_loop(mlp, model, objective, ds.flip_ok, torch.device("cpu")).stepper.memory_format == \
        torch.contiguous_format


# --------------------------------------------------------------------------------------------------------------
# Packing


@pytest.mark.slow
def test_fractional_cpus_pack_two_trials_on_one_cpu(store, tmp_path):
    """resources.cpu 0.5 on a Ray with one CPU: both trials finish, and they ran at the same time."""
    import ray

    from aesweep.service import driver

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             **loopback.init_kwargs())
    try:
        # Trials of a few seconds each (a small conv AE), so that two that run together overlap for sure.
        path = write_spec(tmp_path, "packed",
                          dataset={"name": "shapes", "train_size": 1200, "test_size": 64, "val_fraction": 0.1},
                          model={"backbone": "conv", "width": 0.25, "latent_dim": 8},
                          train={"epochs": 3, "lr": {"grid": [1.0e-3, 2.0e-3]}},
                          resources={"cpu": 0.5})
        outcome = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri)
    finally:
        ray.shutdown()
    assert outcome.counts["finished"] == 2, outcome.counts
    runs = store.children(store.parent("packed").info.run_id)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    (start_a, end_a), (start_b, end_b) = sorted((r.info.start_time, r.info.end_time) for r in runs)
    assert start_b < end_a, "the second trial started only after the first ended: nothing was packed"
