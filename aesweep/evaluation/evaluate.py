"""Measure a trained trial the way the studies did, in one call: ``evaluate(model, dataset, cfg)``.

Reconstruction metrics on the test split (``test/<metric>``), latent probes and clustering on embeddings computed
once and shared by every probe (``probe/...``, ``cluster/...``), generative and latent metrics (``gen/...``,
``latent/...``), sample quality (``gen/<extractor>/<measure>``), disentanglement (``dis/...``), and figures (PNG).
Used by ``train.run_trial`` at the end of a trial and, through ``train.evaluate_stored``, on a stored trial without
retraining. Imports neither Ray nor MLflow.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from aesweep.data import batches, datasets
from aesweep.evaluation import disentanglement, generative, metrics, probes, sample_quality
from aesweep.evaluation import figures as figmod
from aesweep.spec.trial import EvalConfig, TrialConfig

_log = logging.getLogger(__name__)


@torch.inference_mode()
def embed(model: nn.Module, split: datasets.Split, cfg: EvalConfig, rows: Tensor | None = None,
          batch_size: int = 512) -> Tensor:
    """Embeddings ``(N, D)`` of ``split`` (or of its ``rows``), in eval mode, on the model's device.

    z for a deterministic bottleneck, mu for a gaussian one; ``cfg.with_logvar`` appends logvar (gaussian only),
    ``cfg.with_feature`` the pooled pre-bottleneck feature.
    """
    device = next(model.parameters()).device
    images = split.images if rows is None else split.images[rows.to(split.images.device)]
    was_training = model.training
    model.eval()
    with_logvar = cfg.with_logvar and getattr(model, "gaussian", False)
    try:
        parts = [model.embed(batches.to_float(images[i:i + batch_size].to(device)), with_logvar=with_logvar,
                             with_feature=cfg.with_feature).float()
                 for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def _train_rows(labels: Tensor, cfg: EvalConfig, num_classes: int, seed: int) -> Tensor | None:
    """Which train rows the probes can use at most: every row a probe or a label-efficiency point reads.

    Embedding the whole of a 50k split costs a forward pass per image; probes read at most ``subsample`` rows
    (or n labels per class for ``acc_at_<n>``), so only a seeded stratified subset that large is embedded.
    """
    wanted = max([cfg.subsample or len(labels), cfg.slow_subsample or 0,
                  *(n * num_classes for n in cfg.label_efficiency)])
    if wanted >= len(labels):
        return None
    rows = probes.stratified_subset(labels.cpu().numpy(), wanted, seed)
    return torch.as_tensor(rows, dtype=torch.long)


@torch.inference_mode()
def head_metrics(model: nn.Module, dataset: datasets.Dataset, cfg: EvalConfig, seed: int = 0,
                 batch_size: int = 512) -> dict[str, float]:
    """The classifier variant's own head: ``head/acc``, the accuracy of argmax of its logits on the test split.

    With ``cfg.probe_splits`` also ``head/train_acc`` (on the train rows the probes read: ``_train_rows``, at most
    ``subsample`` of them, stratified and seeded) and ``head/val_acc`` (the validation split), the paradigms
    study's train / val / test table for its classification-guided model. Eval mode (dropout off, BatchNorm
    running statistics). Empty for a model without a classifier head.
    """
    if getattr(model, "classifier", None) is None:
        return {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def accuracy(split: datasets.Split, rows: Tensor | None = None) -> float:
        images = split.images if rows is None else split.images[rows.to(split.images.device)]
        labels = split.labels if rows is None else split.labels[rows.to(split.labels.device)]
        hits = sum(int((model.classify(batches.to_float(images[i:i + batch_size].to(device))).argmax(1)
                        == labels[i:i + batch_size].to(device)).sum()) for i in range(0, len(images), batch_size))
        return hits / max(len(images), 1)

    try:
        out = {"head/acc": accuracy(dataset.test)}
        if cfg.probe_splits:
            out["head/train_acc"] = accuracy(dataset.train, _train_rows(dataset.train.labels, cfg,
                                                                        dataset.num_classes, seed))
            if len(dataset.val):
                out["head/val_acc"] = accuracy(dataset.val)
    finally:
        model.train(was_training)
    return out


def evaluate(model: nn.Module, dataset: datasets.Dataset, cfg: TrialConfig, out_dir: str | Path | None = None,
             seed: int = 0, reconstruction: bool = True, history: Sequence[Mapping[str, float]] | None = None
             ) -> tuple[dict[str, float], list[Path]]:
    """Every measurement ``cfg.eval`` asks for, and the figures (written to ``out_dir/<name>.png`` if given).
    ``reconstruction=False`` leaves out the ``test/<metric>`` pass (``train.run_trial`` measures those in its
    own pass over the test split, with the test loss). ``history``: the trial's per-epoch metrics, oldest first,
    for the ``loss_curves`` figure (skipped without it).

    Returns ``(metrics, figure paths)``. Timings: ``time/eval_s`` in all, and ``time/eval/<part>_s`` per part
    (probes time themselves as ``time/probe/<name>_s``).
    """
    ev = cfg.eval
    started = time.perf_counter()
    out: dict[str, float] = {}

    def timed(part: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        out[f"time/eval/{part}_s"] = time.perf_counter() - t0
        return result

    if reconstruction:
        out.update(timed("reconstruction", metrics.reconstruction_metrics, model, dataset.test,
                         metrics.configured(ev)))
    out.update(timed("head", head_metrics, model, dataset, ev, seed))
    if (ev.probes or ev.clustering) and not dataset.num_classes:
        _log.warning("%s has no labels: probes and clustering skipped", dataset.name)
    elif ev.probes or ev.clustering:
        rows = _train_rows(dataset.train.labels, ev, dataset.num_classes, seed)
        train_x = timed("embed", embed, model, dataset.train, ev, rows)
        train_y = dataset.train.labels if rows is None else dataset.train.labels[rows.to(dataset.train.labels.device)]
        test_x = embed(model, dataset.test, ev)
        val_x = embed(model, dataset.val, ev) if ev.probe_splits and len(dataset.val) else None
        out.update(timed("probes", probes.run_probes, train_x, train_y, test_x, dataset.test.labels, ev,
                         dataset.num_classes, seed, val_x=val_x,
                         val_y=dataset.val.labels if val_x is not None else None))
    if ev.generative:
        out.update(timed("generative", generative.generative_metrics, model, dataset, cfg, seed=seed))
    if ev.disentanglement:  # dis/<name>, on datasets with generative factors
        out.update(timed("disentanglement", disentanglement.disentanglement_metrics, model, dataset, ev, seed=seed))
    if ev.sample_quality is not None:
        out.update(timed("sample_quality", sample_quality.sample_quality_metrics, model, dataset, cfg, seed=seed))
    paths: list[Path] = []
    if ev.figures and out_dir is not None:
        paths = timed("figures", figmod.make_figures, model, dataset, ev.figures, out_dir,
                      figmod.figure_title(cfg), prior=generative.prior_for_trial(cfg), seed=seed, history=history)
    out["time/eval_s"] = time.perf_counter() - started
    return out, paths


def online_probe_metrics(model: nn.Module, dataset: datasets.Dataset, cfg: EvalConfig, seed: int = 0
                         ) -> dict[str, float]:
    """The cheap probe run every ``online_probe_every`` epochs: kNN / linear probe fitted on
    ``online_probe_size`` train embeddings and scored on as many validation embeddings (``val/probe/...``),
    so a scheduler can stop trials on latent quality, not only on reconstruction; with
    ``cfg.online_disentanglement`` also those measures (``val/dis/<key>``) on the same codes and their factors.
    Nothing for a dataset without labels (nor disentanglement without factors)."""
    factors = dataset.train.factors is not None and dataset.val.factors is not None and cfg.online_disentanglement
    if not dataset.num_classes and not factors:
        return {}
    generator = torch.Generator().manual_seed(seed)
    n_train = min(cfg.online_probe_size, len(dataset.train))
    n_val = min(cfg.online_probe_size, len(dataset.val))
    train_rows = torch.randperm(len(dataset.train), generator=generator)[:n_train]
    val_rows = torch.randperm(len(dataset.val), generator=generator)[:n_val]
    train_x = embed(model, dataset.train, cfg, train_rows)
    val_x = embed(model, dataset.val, cfg, val_rows)
    out: dict[str, float] = {}
    if dataset.num_classes:
        label_device = dataset.train.labels.device
        out.update(probes.online_probe(train_x, dataset.train.labels[train_rows.to(label_device)], val_x,
                                       dataset.val.labels[val_rows.to(label_device)], num_classes=dataset.num_classes))
    if factors:
        device = dataset.train.factors.device
        measured = disentanglement.measure(
            train_x, dataset.train.factors[train_rows.to(device)], val_x, dataset.val.factors[val_rows.to(device)],
            cfg.online_disentanglement, cfg.disentanglement_protocol, seed, dataset.factor_names)
        out.update({f"val/{k}": v for k, v in measured.items() if k.startswith("dis/")})
    return out
