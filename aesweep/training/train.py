"""One trial: ``run_trial(cfg, report, checkpoint_dir)``, the training loop every variant shares.

It imports neither Ray nor MLflow. The sweep adapts ``report`` to ``tune.report``; ``train-one`` adapts it to a
progress bar. Per epoch it reports ``train/loss``, ``loss/<term>`` (train means), ``val/loss``,
``val/loss/<term>``, ``val/mse``, ``val/psnr`` (at the end also every configured reconstruction metric on the
validation split, ``val/<metric>``), ``lr`` (the epoch's learning rate, ``train.schedule``) and the
parameter counts ``model/params``, ``model/params/encoder``, ``model/params/decoder``, and writes a checkpoint (model, optimiser, epoch, RNG states,
early-stopping state; ``state_dict``s and tensors only, loadable with ``torch.load(weights_only=True)``).

Given the directory of such a checkpoint, ``run_trial`` continues at the next epoch and, on the CPU with the same
seed, produces exactly the metrics an uninterrupted run would have.

A non-finite loss stops the trial at once: the result is ``failed`` with the epoch, the step and the term that
went non-finite; nothing raises out of ``run_trial`` for it (nor for running out of memory).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from aesweep.data import batches, datasets
from aesweep.evaluation.baselines import BASELINES, run_baseline
from aesweep.evaluation.evaluate import evaluate, online_probe_metrics
from aesweep.evaluation.metrics import MetricAccumulator, configured
from aesweep.models.losses import ADVERSARY_LOSSES, Batch, objective_loss
from aesweep.models.model import AEOutput, AutoEncoder
from aesweep.spec import schedules, variants
from aesweep.spec.trial import TrialConfig

CHECKPOINT_FILE = "checkpoint.pt"

# report(metrics, epoch, checkpoint_dir): epoch counts from 1; checkpoint_dir holds CHECKPOINT_FILE of that epoch.
Report = Callable[[dict[str, float], int, Path | None], None]
# on_batch(epoch, step, steps_per_epoch): progress within an epoch (train-one draws a bar with it).
OnBatch = Callable[[int, int, int], None]


@dataclass
class TrialResult:
    """What ``run_trial`` returns. ``metrics`` holds the last epoch's metrics plus the final test metrics."""

    status: Literal["finished", "failed"]
    epochs: int  # epochs completed (including those before a resume)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch metrics run in this call
    stopped_early: bool = False
    reason: str | None = None  # why it failed
    failure: dict[str, Any] | None = None  # {"epoch", "step", "term"} for a non-finite loss
    artifacts: list[Path] = field(default_factory=list)  # figures and the final weights, under workdir


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, term: str, value: float):
        self.epoch, self.step, self.term, self.value = epoch, step, term, value
        super().__init__(f"non-finite loss ({term} = {value}) at epoch {epoch}, step {step}")


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when available and granted (``auto`` or ``cuda``), else the CPU."""
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build(cfg: TrialConfig, dataset: datasets.Dataset) -> tuple[AutoEncoder, variants.Objective]:
    """The model and resolved objective of a trial, for a loaded dataset."""
    o = cfg.objective
    in_shape = (dataset.channels, *dataset.image_size)
    objective = variants.compose(o.variant, {k: getattr(o, k) for k in variants.KNOBS}, o.recon_weight,
                                 elements_per_image=math.prod(in_shape), kl_scale=o.kl_scale,
                                 latent_dim=cfg.model.latent_dim)
    if objective.fit:  # a baseline (pca, raw_pixels): fitted by run_trial, not trained
        return BASELINES.get(objective.fit)(cfg, in_shape), objective
    model = AutoEncoder.from_config(cfg.model, objective, in_shape, dataset.num_classes)
    return model, objective


def trained_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the trial's optimiser updates: all but an adversary's (``AutoEncoder.adversary``), which
    has its own optimiser and must not be moved by the loss it is trained against."""
    adversary = getattr(model, "adversary", None)
    own = {id(p) for p in adversary.parameters()} if adversary is not None else set()
    return [p for p in model.parameters() if id(p) not in own]


def _optimizer(cfg: TrialConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    t = cfg.train
    params = trained_parameters(model)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates every parameter in one launch: a real win for small models on a GPU, and a small
    # one (~2%) on a CPU, where torch has had it since 2.4.
    fused = device.type in ("cuda", "cpu")
    return cls(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused)


def _adversary_optimizer(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer | None:
    """Adam over the adversary's parameters with its own settings (``objective.discriminator``), or None."""
    adversary = getattr(model, "adversary", None)
    if adversary is None:
        return None
    settings = cfg.objective.discriminator
    assert settings is not None, "an adversary is built from objective.discriminator"
    return torch.optim.Adam(adversary.parameters(), lr=settings.lr, betas=tuple(settings.betas))


class _Stepper:
    """Turns a batch of uint8 images into (model outputs, loss terms) for the trial's objective.

    ``forward``: what runs the model in training (the model itself, or its ``torch.compile``d forward); in eval
    mode the plain model runs (no second compilation for the eval graph). ``channels_last``: feed NHWC-strided
    inputs (the model's weights are in that layout too), which cuDNN's and oneDNN's convolutions prefer."""

    def __init__(self, cfg: TrialConfig, model: AutoEncoder, objective: variants.Objective, flip_ok: bool,
                 forward: Callable[[Tensor], AEOutput] | None = None, channels_last: bool = False,
                 dataset_size: int | None = None):
        self.model, self.objective, self.flip_ok = model, objective, flip_ok
        self.dataset_size = dataset_size  # train images, for terms that estimate a marginal (beta-TCVAE)
        self.forward = forward if forward is not None else model
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        o = cfg.objective
        # Knobs the loss terms read by keyword; a PriorConfig goes in as plain numbers.
        self.augment = {"pad": o.augment_pad, "jitter": 0.2 if o.augment_jitter is None else o.augment_jitter,
                        "scale": o.augment_scale}
        self.knobs = {
            "recon": o.recon,
            "mae_weight": o.mae_weight,
            "temperature": o.temperature,
            "prior": o.prior.model_dump() if o.prior is not None else None,
        }

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator
                 ) -> tuple[Tensor, dict[str, Tensor], AEOutput]:
        """images: (B, C, H, W) uint8 on the model's device -> (weighted total, unweighted terms, output)."""
        clean = batches.to_float(images).contiguous(memory_format=self.memory_format)
        view2_out = None
        if self.objective.two_views:
            clean, view2 = batches.two_views(clean, flip=self.flip_ok, generator=generator, **self.augment)
        x = batches.corrupt(clean, self.objective.noise_sigma, generator) if self.objective.noise_sigma > 0 else clean
        forward = self.forward if self.model.training else self.model
        out = forward(x)
        if self.objective.two_views:
            x2 = batches.corrupt(view2, self.objective.noise_sigma, generator) if self.objective.noise_sigma > 0 else view2
            view2_out = forward(x2)
        batch = Batch(x=x, target=clean, labels=labels, view2=view2_out, model=self.model,
                      dataset_size=self.dataset_size)
        total, terms = objective_loss(self.objective, out, batch, **self.knobs)
        return total, terms, out


@dataclass
class Loop:
    """What the training loop runs with, besides the model and the data (``make_loop`` builds it)."""

    optimizer: torch.optim.Optimizer
    stepper: _Stepper
    autocast: Any  # a context manager: bf16 autocast, or nothing
    check_every: int  # steps between loss checks (a host-device sync each)
    adversary_optimizer: torch.optim.Optimizer | None = None  # the adversary's own (FactorVAE), else None


def make_loop(cfg: TrialConfig, model: torch.nn.Module, objective: variants.Objective, flip_ok: bool,
              device: torch.device, channels_last: bool | None = None, dataset_size: int | None = None) -> Loop:
    """Move ``model`` to ``device`` and build its optimiser and stepper with the fast paths this device allows.

    The one place these choices are made, for ``run_trial`` and for bench/train_throughput.py alike:
    - channels_last (NHWC) weights and inputs for convolutional models (``channels_last=None``; True / False
      force it): the layout cuDNN's and oneDNN's kernels run natively. On a 2-core CPU it trained the conv AEs
      11-44% faster (docs/performance.md);
    - ``torch.compile`` of the training forward when ``train.compile`` asks (``auto``: on CUDA only);
    - bf16 autocast on CUDA when ``train.precision`` is bf16;
    - Adam / AdamW: the fused kernel (``_optimizer``);
    - a loss check every step on the CPU (no sync to pay), every 25 steps on a GPU;
    - an adversary's own optimiser where the objective trains one (FactorVAE's discriminator).
    ``dataset_size``: images in the train split (beta-TCVAE's estimate of q(z)).
    """
    model.to(device)
    if channels_last is None:
        channels_last = any(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model, device)
    wanted = cfg.train.compile
    forward = torch.compile(model) if wanted is True or (wanted == "auto" and device.type == "cuda") else model
    stepper = _Stepper(cfg, model, objective, flip_ok, forward=forward, channels_last=channels_last,
                       dataset_size=dataset_size)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.train.precision == "bf16"
                and device.type == "cuda" else contextlib.nullcontext())
    return Loop(optimizer, stepper, autocast, 1 if device.type == "cpu" else 25, _adversary_optimizer(cfg, model))


def epoch_lr(cfg: TrialConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch`` under ``cfg.train.schedule``: a function of the epoch alone, so a
    resumed trial sets exactly the rates of an uninterrupted one."""
    t = cfg.train
    return schedules.lr_at(t.schedule.name, epoch, t.epochs, t.schedule.warmup_epochs, t.lr, **t.schedule.params())


def _batches(split: datasets.Split, batch_size: int, shuffle: bool, generator: torch.Generator | None
             ) -> Iterator[tuple[Tensor, Tensor]]:
    for batch in batches.iterate_batches(split, batch_size, shuffle=shuffle, generator=generator):
        yield batch.images, batch.labels


@torch.inference_mode()
def evaluate_split(stepper: _Stepper, split: datasets.Split, batch_size: int, prefix: str, seed: int,
                   metrics: Sequence[str] = ()) -> dict[str, float]:
    """Loss, loss terms, MSE and PSNR on a split, in eval mode, with a fixed augmentation seed.

    PSNR is the mean over images of 10 log10(1 / MSE_image), images in [0, 1]; a perfect image counts as 100 dB.
    ``metrics``: reconstruction metrics (``metrics.py`` names) measured in the same pass on the reconstructions of
    the clean images, exactly what ``metrics.reconstruction_metrics`` reports (their ``mse`` / ``psnr`` replace
    the pass's own). When the objective feeds the model clean images they reuse the pass's forward; a denoising
    or two-view objective needs one more forward of the clean batch. The split is read once either way.
    """
    model = stepper.model
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=split.images.device).manual_seed(seed)
    n = 0
    sums: dict[str, Tensor] = {}
    measured = MetricAccumulator(metrics) if metrics else None
    clean_input = not stepper.objective.two_views and stepper.objective.noise_sigma == 0
    code_counts: Tensor | None = None  # a vector-quantised bottleneck: how often each code is used
    for images, labels in _batches(split, batch_size, shuffle=False, generator=None):
        total, terms, out = stepper(images, labels, generator)
        if out.vq is not None:
            counts = torch.bincount(out.vq.codes.flatten(), minlength=model.bottleneck.codebook.shape[0])
            code_counts = counts if code_counts is None else code_counts + counts
        target = batches.to_float(images)
        if measured is not None:
            measured.update(out.x_hat if clean_input else model(target).x_hat, target)
        per_image = (out.x_hat.float() - target).pow(2).flatten(1).mean(1)
        psnr = -10 * torch.log10(per_image.clamp_min(1e-10))
        b = images.shape[0]
        for key, value in (("loss", total), ("mse", per_image.mean()), ("psnr", psnr.mean()),
                           *((f"loss/{k}", v) for k, v in terms.items())):
            sums[key] = sums.get(key, 0) + value.float() * b
        n += b
    model.train(was_training)
    result = {f"{prefix}/{k}": (v / max(n, 1)).item() for k, v in sums.items()}
    if code_counts is not None:
        result.update({f"{prefix}/{k}": v for k, v in codebook_use(code_counts).items()})
    if measured is not None:
        result.update(measured.compute(prefix))
    return result


def codebook_use(counts: Tensor) -> dict[str, float]:
    """A codebook's use from its code counts ``(K,)``: ``vq/perplexity`` = exp(entropy of the code frequencies)
    (1 when one code takes everything, K when all are used equally) and ``vq/usage``, the fraction of codes used."""
    p = counts.double() / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return {"vq/perplexity": float(entropy.exp()), "vq/usage": float((counts > 0).double().mean())}


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Write ``directory/checkpoint.pt`` atomically (a crash mid-write never leaves a torn checkpoint)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)
    return directory


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location=device, weights_only=True)


class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement larger than ``min_delta`` on ``monitor``."""

    def __init__(self, patience: int | None, mode: str, min_delta: float):
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when training should stop."""
        better = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def run_trial(
    cfg: TrialConfig,
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    *,
    workdir: str | Path | None = None,
    dataset: datasets.Dataset | None = None,
    on_batch: OnBatch | None = None,
) -> TrialResult:
    """Train and measure one trial.

    report: called after every epoch with that epoch's metrics, the epoch number (from 1) and the directory
      holding its checkpoint.
    checkpoint_dir: a directory holding a checkpoint of this trial to continue from (the next epoch on).
    workdir: where this run writes its per-epoch checkpoint (one, overwritten); default a temporary directory.
    dataset: an already loaded dataset (a sweep worker keeps it across trials); default: load ``cfg.dataset``.
    """
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    started = time.perf_counter()
    dataset = (dataset or datasets.load_dataset(cfg.dataset)).to(device)
    model, objective = build(cfg, dataset)
    if objective.fit:  # a baseline fits on the train split and is measured as a trained model would be
        import tempfile

        where = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="aesweep-trial-"))
        metrics, files = run_baseline(cfg, model, dataset, report, where, device)
        return TrialResult("finished", 1, metrics, [metrics], artifacts=files)
    loop = make_loop(cfg, model, objective, dataset.flip_ok, device, dataset_size=len(dataset.train))
    optimizer, stepper = loop.optimizer, loop.stepper
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
    es = cfg.train.early_stopping
    stopper = EarlyStopping(es.patience, es.mode, es.min_delta)

    start_epoch, earlier = 0, []
    if checkpoint_dir is not None:
        state = load_checkpoint(checkpoint_dir, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if loop.adversary_optimizer is not None:
            loop.adversary_optimizer.load_state_dict(state["adversary_optimizer"])
        stopper.load_state_dict(state["early_stopping"])
        _set_rng_state(state["rng"], generator)
        start_epoch = int(state["epoch"])
        earlier = list(state.get("history", []))  # epochs before the resume, for the loss curves
    if workdir is None:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="aesweep-trial-")
    workdir = Path(workdir)

    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    artifacts: list[Path] = []
    params = model.parameter_counts()
    epoch = start_epoch
    stopped_early = False
    train_seconds = 0.0

    def finish(metrics: dict[str, float]) -> dict[str, float]:
        """Final measurements, merged into the last epoch's metrics so that its report carries them (a
        scheduler may end the trial at that report; the searcher reads its objective from it)."""
        final = {**metrics, "time/train_s": train_seconds}
        # One pass over the test split gives the test loss and every reconstruction metric; evaluate() then
        # skips its own reconstruction pass. Its time counts as evaluation.
        t0 = time.perf_counter()
        final.update(evaluate_split(stepper, dataset.test, cfg.train.batch_size * 2, "test", cfg.train.seed,
                                    metrics=configured(cfg.eval)))
        # The validation split measured like the test split, once, with the configured metrics its per-epoch pass
        # lacks (that pass has loss, MSE and PSNR): a k-fold study tabulates its metrics over the validation folds.
        missing = {k: v for k, v in configured(cfg.eval).items() if f"val/{k}" not in metrics}
        if missing:
            val = evaluate_split(stepper, dataset.val, cfg.train.batch_size * 2, "val", cfg.train.seed,
                                 metrics=missing)
            final.update({k: v for k, v in val.items() if k not in metrics})
        test_pass = time.perf_counter() - t0
        # The model as trained last (not the best epoch's): what the studies measured after early stopping.
        measured, figure_paths = evaluate(model, dataset, cfg, workdir / "figures", seed=cfg.train.seed,
                                          reconstruction=False, history=[*earlier, *history, metrics])
        measured["time/eval/reconstruction_s"] = test_pass
        measured["time/eval_s"] += test_pass
        final.update(measured)
        weights = workdir / "model" / "state_dict.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
        artifacts[:] = [*figure_paths, weights]
        final["best/epoch"] = float(stopper.best_epoch)
        if stopper.best is not None:
            final[f"best/{es.monitor}"] = stopper.best
        final["time/total_s"] = time.perf_counter() - started
        return final

    try:
        for epoch in range(start_epoch + 1, cfg.train.epochs + 1):
            epoch_start = time.perf_counter()
            lr = epoch_lr(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_metrics = _train_epoch(model, loop, dataset.train, cfg, generator, epoch, on_batch)
            train_seconds += time.perf_counter() - epoch_start
            metrics = {**train_metrics,
                       **evaluate_split(stepper, dataset.val, cfg.train.batch_size * 2, "val", cfg.train.seed),
                       "epoch": float(epoch), "lr": lr, **params,
                       "time/epoch_s": time.perf_counter() - epoch_start}
            every = cfg.eval.online_probe_every
            if every and epoch % every == 0:
                metrics.update(online_probe_metrics(model, dataset, cfg.eval, cfg.train.seed))
            if es.monitor not in metrics:
                raise KeyError(f"train.early_stopping.monitor {es.monitor!r} is not a per-epoch metric "
                               f"(have: {', '.join(sorted(metrics))})")
            stopped_early = stopper.update(metrics[es.monitor], epoch)
            save_checkpoint(workdir, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "rng": _rng_state(generator), "early_stopping": stopper.state_dict(),
                "history": [*earlier, *history, metrics],
                **({"adversary_optimizer": loop.adversary_optimizer.state_dict()}
                   if loop.adversary_optimizer is not None else {}),
            })
            last = stopped_early or epoch == cfg.train.epochs
            if last:
                metrics = finish(metrics)
            history.append(metrics)
            if report is not None:
                report(metrics, epoch, workdir)
            if last:
                break
        else:  # resumed from the checkpoint of the last epoch: only the final measurements are missing
            metrics = finish({"epoch": float(epoch), **params})
            if report is not None:
                report(metrics, epoch, workdir)
    except NonFiniteLoss as err:
        return TrialResult("failed", err.epoch - 1, metrics, history, reason=str(err),
                           failure={"epoch": err.epoch, "step": err.step, "term": err.term})
    except torch.cuda.OutOfMemoryError as err:
        return TrialResult("failed", epoch - 1, metrics, history, reason=f"out of memory at epoch {epoch}: {err}")
    except KeyError as err:
        return TrialResult("failed", epoch - 1, metrics, history, reason=str(err.args[0]))
    return TrialResult("finished", epoch, metrics, history, stopped_early=stopped_early, artifacts=artifacts)


def _train_epoch(model: AutoEncoder, loop: Loop, split: datasets.Split, cfg: TrialConfig,
                 generator: torch.Generator, epoch: int, on_batch: OnBatch | None) -> dict[str, float]:
    """One pass over the shuffled train split; mean loss and mean of each term (unweighted).

    Where the objective trains an adversary, each step updates the model first, then the adversary on the same
    batch's codes (detached) with its own optimiser; its loss is ``loss/<adversary>``."""
    optimizer, stepper, autocast, check_every = loop.optimizer, loop.stepper, loop.autocast, loop.check_every
    adversary = stepper.objective.adversary if loop.adversary_optimizer is not None else None
    trained = trained_parameters(model)
    model.train()
    steps = math.ceil(len(split) / cfg.train.batch_size)
    # Term values stay on the device; they are read back every `check_every` steps to catch a NaN quickly
    # without syncing the GPU on every step.
    pending: list[tuple[int, Tensor]] = []
    sums: Tensor | None = None
    adversary_sum: Tensor | float = 0.0
    names: list[str] = []
    for step, (images, labels) in enumerate(_batches(split, cfg.train.batch_size, True, generator), start=1):
        with autocast:
            total, terms, out = stepper(images, labels, generator)
        if not names:
            names = ["loss", *terms]
        values = torch.stack([total.detach().float(), *(t.detach().float() for t in terms.values())])
        pending.append((step, values))
        if step % check_every == 0 or step == steps:
            _check_finite(pending, names, epoch)
            pending.clear()
        sums = values if sums is None else sums + values
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trained, cfg.train.grad_clip)
        optimizer.step()
        if (adversary_loss := adversary_step(model, loop, out)) is not None:
            adversary_sum = adversary_sum + adversary_loss
        if on_batch is not None:
            on_batch(epoch, step, steps)
    assert sums is not None
    means = (sums / steps).tolist()
    result = {("train/loss" if name == "loss" else f"loss/{name}"): value
              for name, value in zip(names, means, strict=True)}
    if adversary is not None:
        result[f"loss/{adversary}"] = float(adversary_sum) / steps
    return result


def adversary_step(model: AutoEncoder, loop: Loop, out: AEOutput) -> Tensor | None:
    """One update of the objective's adversary (FactorVAE's discriminator) on this step's codes, detached, by its
    own optimiser, after the model's update; its loss (detached), or None where the objective has none."""
    adversary = loop.stepper.objective.adversary
    if adversary is None or loop.adversary_optimizer is None or model.adversary is None:
        return None
    loop.adversary_optimizer.zero_grad(set_to_none=True)
    with loop.autocast:
        loss = ADVERSARY_LOSSES[adversary](model.adversary, out.z)
    loss.backward()
    loop.adversary_optimizer.step()
    return loss.detach().float()


def _check_finite(pending: list[tuple[int, Tensor]], names: list[str], epoch: int) -> None:
    stacked = torch.stack([v for _, v in pending]).cpu()
    finite = torch.isfinite(stacked)
    if bool(finite.all()):
        return
    row = int((~finite).any(dim=1).nonzero()[0])
    step, values = pending[row][0], stacked[row]
    # Name the term that went non-finite; the total only when every term is finite (an overflowing weight).
    bad = [i for i in range(1, len(names)) if not math.isfinite(values[i])] or [0]
    raise NonFiniteLoss(epoch, step, names[bad[0]], float(values[bad[0]]))


def evaluate_stored(cfg: TrialConfig, directory: str | Path, out_dir: str | Path | None = None,
                    dataset: datasets.Dataset | None = None) -> tuple[dict[str, float], list[Path]]:
    """Re-run evaluation (e.g. new probes in ``cfg.eval``) on a trial stored in ``directory`` without retraining.

    ``directory`` holds ``model/state_dict.pt`` (a finished trial) or ``checkpoint.pt`` (a per-epoch one).
    """
    directory = Path(directory)
    device = pick_device(cfg.train.device)
    dataset = (dataset or datasets.load_dataset(cfg.dataset)).to(device)
    model, _ = build(cfg, dataset)
    weights = directory / "model" / "state_dict.pt"
    state = (torch.load(weights, map_location=device, weights_only=True) if weights.exists()
             else load_checkpoint(directory, device)["model"])
    model.load_state_dict(state)
    model.to(device)
    measured, paths = evaluate(model, dataset, cfg, out_dir, seed=cfg.train.seed)
    return {**model.parameter_counts(), **measured}, paths


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's out-of-memory error, the CPU allocator's (a RuntimeError), or Python's MemoryError."""
    if isinstance(err, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(s in text for s in ("can't allocate memory", "out of memory",
                                                                      "not enough memory"))


def failure_reason(err: BaseException) -> str:
    """One line for an exception that ended a trial; an out-of-memory error says so first, since it is the
    user's to fix (a smaller model, batch or a larger resources.gpu share)."""
    text = " ".join(str(err).split())
    if is_out_of_memory(err):
        return f"out of memory ({type(err).__name__}: {text[:300]}); use a smaller model or batch"
    return f"{type(err).__name__}: {text[:2000]}"
