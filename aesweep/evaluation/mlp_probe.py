"""The ``mlp_torch`` probe: a small torch MLP classifier trained on frozen embeddings, on their device.

This is the protocol of the paradigms studies (001: "a two-layer classifier" with dropout on the frozen encoder,
Adam, lr 1e-3, batch 128, early stopping; 004: "three fully connected layers with batch normalization, ReLU
activations, and dropout regularization", train / validation / test accuracy), not a logistic regression.

``fit_mlp(train_x (N, D), train_y (N,), num_classes, ...)`` holds out a stratified ``val_fraction`` of the rows it
is given (the probe's own validation slice: the dataset's validation split stays untouched, so ``val_acc`` with
``probe_splits`` is not the split that chose the epoch), trains with Adam on cross-entropy over shuffled
minibatches, scores the slice after every epoch and stops after ``patience`` epochs without a better validation
accuracy (scikit-learn's MLP criterion); the weights of the best epoch are restored. With fewer rows than one
per class in the slice (a label-efficiency point of a few labels) it trains ``max_epochs`` on all rows.

Architecture: ``[Linear(d, w) -> (BatchNorm1d) -> ReLU -> Dropout(p)]`` for each hidden width ``w``, then
``Linear(w_last, num_classes)``; ``widths: []`` is a linear classifier. Inputs are standardised by the caller
(``probes.fit_predict``), as for every probe.

Seeded and side-effect free: initialisation, shuffling and dropout use ``seed`` under ``torch.random.fork_rng``,
so the caller's RNG state (a trial's, mid-evaluation) is the same afterwards. ``TorchMLPClassifier`` wraps the same
fit as a scikit-learn estimator for ``backend: sklearn`` and the paper protocol's pipelines; it runs on the CPU.
This module imports scikit-learn; ``probes`` imports it lazily.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import Tensor, nn

from aesweep.evaluation.solvers import solver_threads
from aesweep.models.model import classifier_head

__all__ = ["MLPFit", "TorchMLPClassifier", "build_mlp", "fit_mlp", "torch_predict", "validation_slice"]

# Fewer rows than this in a minibatch are dropped while training with batch norm (a batch of one has no variance).
_MIN_BN_BATCH = 2


def build_mlp(d_in: int, num_classes: int, widths: Sequence[int] = (64,), dropout: float = 0.2,
              batchnorm: bool = False) -> nn.Module:
    """The classifier: hidden blocks Linear -> (BatchNorm1d) -> ReLU -> Dropout, then a Linear to the logits; the
    same construction as a classification-guided model's head (``model.classifier_head``), so the frozen-encoder
    probe and the end-to-end head of the paradigms studies are one architecture."""

    return classifier_head(d_in, num_classes, widths, dropout, batchnorm)


def validation_slice(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask (N,) of a stratified validation slice: ``max(1, round(fraction * count))`` rows of every
    class with at least two rows (so every class also keeps training rows), drawn by a seeded permutation."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) >= 2:
            k = min(len(rows) - 1, max(1, round(fraction * len(rows))))
            mask[rng.permutation(rows)[:k]] = True
    return mask


@dataclass
class MLPFit:
    """A fitted classifier (eval mode, best epoch's weights), its best epoch (from 1; the last epoch when
    there was no validation slice), and the validation accuracy after every epoch run (empty without a slice)."""

    model: nn.Sequential
    best_epoch: int
    val_acc: list[float] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.val_acc) if self.val_acc else self.best_epoch


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global RNGs seeded inside, restored afterwards (dropout draws from them)."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _threads(device: torch.device) -> Iterator[None]:
    # Minibatch steps of a 64-unit MLP are microsecond-sized ops: one CPU thread avoids OpenMP fork/join costs,
    # as for the other iterative probe solvers (probes.SOLVER_THREADS).

    with solver_threads(device):
        yield


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / max(len(x), 1)


def fit_mlp(train_x: Tensor, train_y: Tensor, num_classes: int, *, widths: Sequence[int] = (64,),
            dropout: float = 0.2, batchnorm: bool = False, lr: float = 1e-3, weight_decay: float = 0.0,
            batch_size: int = 128, max_epochs: int = 100, patience: int = 10, val_fraction: float = 0.1,
            seed: int = 0) -> MLPFit:
    """Train the classifier on ``train_x (N, D)`` float / ``train_y (N,)`` ints in 0..num_classes-1, on
    ``train_x``'s device, with early stopping on a stratified ``val_fraction`` slice (see the module doc)."""
    device = train_x.device
    labels = train_y.detach().cpu().numpy().astype(np.int64)
    held = validation_slice(labels, val_fraction, seed)
    # Embeddings made under torch.inference_mode cannot be saved for backward: work on ordinary copies.
    with torch.inference_mode(False), torch.enable_grad(), _seeded(seed, device), _threads(device):
        x = train_x.detach().float().clone()
        y = torch.as_tensor(labels, device=device)
        held_t = torch.as_tensor(held, device=device)
        fit_x, fit_y = x[~held_t], y[~held_t]
        val_x, val_y = x[held_t], y[held_t]
        model = build_mlp(x.shape[1], num_classes, widths, dropout, batchnorm).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        best_acc, best_epoch, bad, history = -1.0, 0, 0, []
        best_state = None
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = torch.randperm(len(fit_x), generator=generator).to(device)
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                if batchnorm and len(rows) < _MIN_BN_BATCH:
                    continue
                loss = nn.functional.cross_entropy(model(fit_x[rows]), fit_y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if not len(val_x):
                best_epoch = epoch
                continue
            acc = _accuracy(model, val_x, val_y)
            history.append(acc)
            if acc > best_acc:
                best_acc, best_epoch, bad = acc, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad >= patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return MLPFit(model, best_epoch, history)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Predicted labels (M,) for ``x (M, D)`` on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device).float()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) \
        if len(x) else torch.empty(0, dtype=torch.long, device=device)


def torch_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, **options) -> Tensor:
    """The probe's device path (``Probe.torch_predict``): fit on the rows given, labels (M,) for ``test_x``.
    ``options``: the fields of ``EvalConfig.mlp_torch`` and ``seed``."""
    fitted = fit_mlp(train_x, train_y, num_classes, **options)
    return predict(fitted.model, test_x)


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """``fit_mlp`` as a scikit-learn classifier (CPU, float32): for pipelines, ``backend: sklearn`` and
    GridSearchCV. Labels may be any sortable values; ``best_epoch_`` and ``val_acc_`` record the fit."""

    def __init__(self, widths: Sequence[int] = (64,), dropout: float = 0.2, batchnorm: bool = False,
                 lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 128, max_epochs: int = 100,
                 patience: int = 10, val_fraction: float = 0.1, seed: int = 0):
        self.widths = widths
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.seed = seed

    def fit(self, X, y) -> TorchMLPClassifier:  # noqa: N803 (scikit-learn's argument names)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        fitted = fit_mlp(torch.as_tensor(np.asarray(X), dtype=torch.float32), torch.as_tensor(codes),
                         len(self.classes_), widths=tuple(self.widths), dropout=self.dropout,
                         batchnorm=self.batchnorm, lr=self.lr, weight_decay=self.weight_decay,
                         batch_size=self.batch_size, max_epochs=self.max_epochs, patience=self.patience,
                         val_fraction=self.val_fraction, seed=self.seed)
        self.model_, self.best_epoch_, self.val_acc_ = fitted.model, fitted.best_epoch, fitted.val_acc
        return self

    def predict(self, X) -> np.ndarray:  # noqa: N803
        codes = predict(self.model_, torch.as_tensor(np.asarray(X), dtype=torch.float32)).numpy()
        return self.classes_[codes]
