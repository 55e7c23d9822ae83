"""The single-trial loop: every variant learns, checkpoints resume exactly, a NaN fails cleanly."""
from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from aesweep.cli import app
from aesweep.data import batches, datasets
from aesweep.models.losses import Batch, objective_loss
from aesweep.models.model import AutoEncoder
from aesweep.spec import variants
from aesweep.spec.load import parse_spec
from aesweep.spec.trial import DatasetConfig, TrialConfig
from aesweep.training.train import CHECKPOINT_FILE, build, load_checkpoint, run_trial

VARIANTS = [p.name for p in variants.PRESETS if p.fit is None] + ["denoising+vae", "contrastive+denoising"]


@pytest.fixture(scope="module")
def shapes():
    """A few hundred shapes images, loaded once for the module."""
    return datasets.load_dataset(DatasetConfig(name="shapes", train_size=480, test_size=128, val_fraction=0.2))


# Knobs a variant cannot go without (FactorVAE's discriminator), or that keep its tiny run tiny.
TINY_KNOBS = {"factorvae": ", discriminator: {widths: [32, 32]}", "vqvae": ", codebook_size: 16, code_dim: 4"}


def tiny(variant: str, **train) -> TrialConfig:
    spec = parse_spec(
        "name: tiny\n"
        "dataset: {name: shapes, train_size: 480, test_size: 128, val_fraction: 0.2}\n"
        "model: {backbone: conv, width: 0.125, latent_dim: 8, projection_dim: 16}\n"
        f"objective: {{variant: '{variant}'{TINY_KNOBS.get(variant, '')}}}\n"
        "train: {epochs: 2, batch_size: 32, lr: 3.0e-3}\n"
        # Evaluation has its own tests (test_evaluate.py); here only the cheap reconstruction metrics run.
        "eval: {metrics: [mse, psnr], probes: [], clustering: [], figures: []}\n"
    )
    trial = spec.resolve()
    return trial.model_copy(update={"train": trial.train.model_copy(update=train)})


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_and_its_loss_decreases(variant, shapes, tmp_path):
    epochs = []
    result = run_trial(tiny(variant), lambda m, e, c: epochs.append(m), dataset=shapes, workdir=tmp_path)
    assert result.status == "finished", result.reason
    assert [int(m["epoch"]) for m in epochs] == [1, 2]
    assert epochs[1]["train/loss"] < epochs[0]["train/loss"]
    objective = variants.compose(variant, {})
    for term in objective.terms:
        assert math.isfinite(epochs[1][f"loss/{term}"]) and math.isfinite(epochs[1][f"val/loss/{term}"])
    for key in ("val/loss", "val/mse", "val/psnr", "test/mse", "test/psnr", "time/train_s", "time/eval_s"):
        assert math.isfinite(result.metrics[key]), key
    assert (tmp_path / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)], ids=["28x28x1", "32x32x3"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_builds_for_both_image_shapes(variant, in_shape):
    cfg = tiny(variant)
    objective = variants.compose(variant, {k: getattr(cfg.objective, k) for k in variants.KNOBS})
    model = AutoEncoder.from_config(cfg.model, objective, in_shape, num_classes=10)
    x = torch.rand(6, *in_shape)
    out = model(x)
    assert out.x_hat.shape == x.shape and out.z.shape == (6, 8)
    assert (out.mu is not None) == (objective.bottleneck == "gaussian")
    assert (out.projection is not None) == ("projection" in objective.heads)
    assert (out.logits is not None) == ("classifier" in objective.heads)
    batch = Batch(x=x, target=x, labels=torch.arange(6) % 3, view2=model(x.flip(-1)) if objective.two_views else None,
                  model=model)
    total, terms = objective_loss(objective, out, batch, **{"temperature": objective.knobs.get("temperature")})
    assert set(terms) == set(objective.terms) and torch.isfinite(total)


# factorvae: the adversary's optimiser is part of the checkpoint; vqvae with an EMA codebook: its buffers are.
@pytest.mark.parametrize("variant", ["vae", "factorvae", "vqvae-ema"])
def test_resumed_run_equals_uninterrupted_run(variant, shapes, tmp_path):
    cfg = tiny(variant.removesuffix("-ema"), epochs=4)
    if variant == "vqvae-ema":
        cfg = cfg.model_copy(update={"objective": cfg.objective.model_copy(update={"ema_decay": 0.9})})
    full: list[dict] = []
    run_trial(cfg, lambda m, e, c: full.append(m), dataset=shapes, workdir=tmp_path / "full")

    # Run 2 epochs, keep that checkpoint, then continue from it in a fresh call.
    first_half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    run_trial(first_half, dataset=shapes, workdir=tmp_path / "half")
    assert load_checkpoint(tmp_path / "half")["epoch"] == 2
    resumed: list[dict] = []
    result = run_trial(cfg, lambda m, e, c: resumed.append(m), checkpoint_dir=tmp_path / "half", dataset=shapes,
                       workdir=tmp_path / "resumed")

    assert [m["epoch"] for m in resumed] == [3.0, 4.0]
    assert result.epochs == 4
    for a, b in zip(full[2:], resumed, strict=True):
        for key in a:
            if not key.startswith("time/"):
                assert a[key] == b[key], key


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("schedule", [
    {"name": "cosine", "warmup_epochs": 1, "min_lr": 1e-4},
    {"name": "onecycle", "warmup_epochs": 2},
    {"name": "step", "step_epochs": 1, "gamma": 0.5},
])
def test_resumed_run_equals_uninterrupted_run_under_a_schedule(schedule, shapes, tmp_path):
    # The same trial (4 epochs under the schedule) killed after epoch 2 and resumed from that checkpoint: the
    # resumed epochs must take the uninterrupted run's learning rates and reach its metrics exactly.
    cfg = tiny("ae", epochs=4)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "schedule": cfg.train.schedule.model_validate(schedule)})})
    full: list[dict] = []
    run_trial(cfg, lambda m, e, c: full.append(m), dataset=shapes, workdir=tmp_path / "full")
    assert len({m["lr"] for m in full}) > 1  # the schedule did change the rate

    def kill_after_two(m, e, c):
        if e == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_trial(cfg, kill_after_two, dataset=shapes, workdir=tmp_path / "half")
    assert load_checkpoint(tmp_path / "half")["epoch"] == 2
    resumed: list[dict] = []
    run_trial(cfg, lambda m, e, c: resumed.append(m), checkpoint_dir=tmp_path / "half", dataset=shapes,
              workdir=tmp_path / "resumed")
    assert [m["epoch"] for m in resumed] == [3.0, 4.0]
    for a, b in zip(full[2:], resumed, strict=True):
        for key in a:
            if not key.startswith("time/"):
                assert a[key] == b[key], key


def test_each_epoch_logs_its_lr_and_the_parameter_counts(shapes, tmp_path):
    cfg = tiny("ae", epochs=3, lr=0.01)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "schedule": cfg.train.schedule.model_validate({"name": "constant", "warmup_epochs": 1})})})
    epochs: list[dict] = []
    result = run_trial(cfg, lambda m, e, c: epochs.append(m), dataset=shapes, workdir=tmp_path)
    assert [m["lr"] for m in epochs] == pytest.approx([0.005, 0.01, 0.01])
    model, _ = build(cfg, shapes)
    counts = model.parameter_counts()
    assert counts["model/params"] == sum(p.numel() for p in model.parameters())
    for m in (*epochs, result.metrics):
        assert {k: m[k] for k in counts} == counts


def test_checkpoint_holds_tensors_and_states_only(shapes, tmp_path):
    run_trial(tiny("ae", epochs=1), dataset=shapes, workdir=tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)  # raises on anything but plain data
    assert set(state) == {"model", "optimizer", "epoch", "rng", "early_stopping", "history"}
    model, _ = build(tiny("ae"), shapes)
    model.load_state_dict(state["model"])


def test_a_huge_learning_rate_fails_with_epoch_step_and_term(shapes, tmp_path):
    reported = []
    result = run_trial(tiny("vae", lr=1e12, epochs=3), lambda m, e, c: reported.append(e), dataset=shapes,
                       workdir=tmp_path)
    assert result.status == "failed"
    assert result.failure is not None and result.failure["epoch"] >= 1 and result.failure["step"] >= 1
    assert result.failure["term"] in {"recon", "kl", "loss"}
    assert "non-finite" in result.reason and f"step {result.failure['step']}" in result.reason
    assert len(reported) == result.failure["epoch"] - 1  # no report for the epoch that went wrong


def test_early_stopping_stops_after_patience(shapes, tmp_path):
    cfg = tiny("ae", epochs=6)
    # An impossible improvement threshold: every epoch after the first counts as "no better".
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "early_stopping": cfg.train.early_stopping.model_copy(update={"patience": 2, "min_delta": 1e9})})})
    epochs = []
    result = run_trial(cfg, lambda m, e, c: epochs.append(e), dataset=shapes, workdir=tmp_path)
    assert result.stopped_early and epochs == [1, 2, 3]
    assert result.metrics["best/epoch"] == 1


def test_train_one_cli_prints_final_metrics(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: cli\ndataset: {name: shapes, train_size: 200, test_size: 64}\n"
                    "eval: {probes: [knn], clustering: [], figures: [reconstructions]}\n"
                    "model: {backbone: mlp, latent_dim: {grid: [4, 8]}}\ntrain: {epochs: 1, batch_size: 64}\n")
    result = CliRunner().invoke(app, ["train-one", str(spec), "--out", str(tmp_path / "out"),
                                      "--set", "objective.variant=sparse"])
    assert result.exit_code == 0, result.output
    assert "model.latent_dim=4" in result.output and "test/mse" in result.output
    assert (tmp_path / "out" / "trial.yaml").read_text().count("variant: sparse") == 1
    # Resumed from the checkpoint of its last epoch: nothing left to train, only the final measurements.
    again = CliRunner().invoke(app, ["train-one", str(spec), "--out", str(tmp_path / "out"), "--resume",
                                     "--set", "objective.variant=sparse"])
    assert again.exit_code == 0, again.output
    assert "trial failed" not in again.output and "test/mse" in again.output


def test_train_one_cli_rejects_a_bad_spec_with_exit_2(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: cli\nmodel: {latent_dim: 0}\n")
    result = CliRunner().invoke(app, ["train-one", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{spec}:2: model.latent_dim: input should be greater than 0" in result.output
    assert not (tmp_path / "out").exists()


def test_the_final_report_measures_the_validation_split_with_every_configured_metric(shapes, tmp_path):
    from aesweep.evaluation import metrics

    cfg = tiny("ae", epochs=2)
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"metrics": ["mse", "mae", "bce"]})})
    epochs: list[dict] = []
    result = run_trial(cfg, lambda m, e, c: epochs.append(m), dataset=shapes, workdir=tmp_path)
    assert "val/mae" not in epochs[0]  # per epoch: loss, MSE and PSNR only
    model, _ = build(cfg, shapes)
    model.load_state_dict(torch.load(tmp_path / "model" / "state_dict.pt", weights_only=True))
    reference = metrics.reconstruction_metrics(model.eval(), shapes.val, ["mae", "bce"], prefix="val")
    assert {k: result.metrics[k] for k in reference} == pytest.approx(reference, rel=1e-5)
    assert result.metrics["val/mse"] == epochs[-1]["val/mse"]  # the last epoch's, not overwritten


@pytest.mark.parametrize("pad, jitter, scale, same", [(0, 0.0, None, True), (None, 0.0, None, False),
                                                      (0, 0.2, None, False), (0, 0.0, 0.2, False)])
def test_the_trials_augmentation_knobs_make_the_two_views(shapes, pad, jitter, scale, same):
    """objective.augment_pad / augment_jitter / augment_scale reach the views the contrastive loss compares:
    without crop, jitter or resized crop (and no flip) both views are the image itself; the default 3-px crop, a
    jitter or a resized crop makes them differ."""
    from aesweep.training.train import _Stepper

    cfg = tiny("contrastive")
    cfg = cfg.model_copy(update={"objective": cfg.objective.model_copy(
        update={"augment_pad": pad, "augment_jitter": jitter, "augment_scale": scale})})
    model, objective = build(cfg, shapes)
    seen: list[torch.Tensor] = []

    def recording_forward(x):
        seen.append(x.clone())
        return model(x)

    model.train()
    images = shapes.train.images[:32]
    _Stepper(cfg, model, objective, flip_ok=False, forward=recording_forward)(
        images, shapes.train.labels[:32], torch.Generator().manual_seed(0))
    assert len(seen) == 2
    assert torch.equal(seen[0], seen[1]) is same
    if same:
        assert torch.equal(seen[0], batches.to_float(images))
