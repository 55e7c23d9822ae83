"""Learning-rate schedules, registered by name in ``registry.SCHEDULES``; ``train.schedule`` picks one.

A schedule is a pure function of the epoch: ``fn(i, epochs, warmup, lr, **params) -> lr`` gives the learning rate
of the 0-based epoch ``i`` of a trial of ``epochs`` epochs whose base rate is ``train.lr``. The training loop sets
it on every parameter group at the start of each epoch and logs it as ``lr``. Being a function of the epoch
alone, the schedule's state is the epoch count: a trial resumed from its checkpoint at epoch k continues with
exactly the rates an uninterrupted run uses (the checkpoint stores the epoch; nothing else is needed).

Per epoch, not per step: the studies state their schedules in epochs (004: "cosine annealing schedule with
optional warm-up"), and a per-epoch rate is what a resumed trial can reproduce without knowing the step count.

``params``: the schedule's own options (``train.schedule.<param>``), registered with their defaults by
``@schedule(name, **defaults)``; the spec rejects a param the chosen schedule does not take.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aesweep.registry import SCHEDULES

# OneCycleLR's defaults in torch: start at lr / 25, end at lr / (25 * 1e4).
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4

Schedule = Callable[..., float]


def schedule(name: str, *, min_warmup: int = 0, **defaults: Any) -> Callable[[Schedule], Schedule]:
    """Register ``fn(i, epochs, warmup, lr, **params)`` as ``name``; ``defaults``: its params and their defaults;
    ``min_warmup``: the fewest warm-up epochs it runs with."""

    def add(fn: Schedule) -> Schedule:
        fn.params = dict(defaults)  # type: ignore[attr-defined]
        fn.min_warmup = min_warmup  # type: ignore[attr-defined]
        return SCHEDULES.register(name)(fn)

    return add


def params_of(name: str) -> dict[str, Any]:
    """The params schedule ``name`` takes, with their defaults."""
    return dict(getattr(SCHEDULES.get(name), "params", {}))


def _warmup(i: int, warmup: int, lr: float) -> float | None:
    """Linear warm-up: epoch i < warmup runs at lr * (i + 1) / (warmup + 1), so the rate rises in equal steps and
    the first epoch after the warm-up is the first at the full rate; None once the warm-up is over."""
    return lr * (i + 1) / (warmup + 1) if i < warmup else None


def _cos(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


@schedule("constant")
def constant(i: int, epochs: int, warmup: int, lr: float) -> float:
    """train.lr every epoch, after an optional linear warm-up."""
    w = _warmup(i, warmup, lr)
    return lr if w is None else w


@schedule("cosine", min_lr=0.0)
def cosine(i: int, epochs: int, warmup: int, lr: float, *, min_lr: float = 0.0) -> float:
    """Cosine annealing from train.lr towards min_lr over the epochs after the warm-up (CosineAnnealingLR)."""
    w = _warmup(i, warmup, lr)
    if w is not None:
        return w
    # t = 0 .. T-1 after the warm-up: torch's CosineAnnealingLR with T_max = T, stepped once per epoch.
    return _cos(lr, min_lr, (i - warmup) / (epochs - warmup))


@schedule("step", step_epochs=10, gamma=0.1)
def step(i: int, epochs: int, warmup: int, lr: float, *, step_epochs: int = 10, gamma: float = 0.1) -> float:
    """train.lr times gamma every step_epochs epochs after the warm-up (StepLR)."""
    w = _warmup(i, warmup, lr)
    return lr * gamma ** ((i - warmup) // step_epochs) if w is None else w


@schedule("onecycle", min_warmup=1)
def onecycle(i: int, epochs: int, warmup: int, lr: float) -> float:
    """One cycle per epoch: cosine up from lr/25 to train.lr over warmup_epochs, then down to lr/2.5e5.

    torch's OneCycleLR (anneal_strategy cos, pct_start = warmup_epochs / epochs) stepped once per epoch: the
    peak is at epoch warmup_epochs, the last epoch at the final rate; warmup_epochs (>= 1) is the rising phase.
    """
    start, end = lr / ONECYCLE_DIV, lr / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
    peak = warmup - 1  # the epoch at the full rate, as OneCycleLR with pct_start = warmup / epochs places it
    if i <= peak:
        return _cos(start, lr, i / peak if peak > 0 else 1.0)
    return _cos(lr, end, (i - peak) / (epochs - 1 - peak))


def lr_at(name: str, epoch: int, epochs: int, warmup: int, lr: float, **params: Any) -> float:
    """The learning rate of 1-based ``epoch`` under schedule ``name``; None params take the schedule's defaults."""
    values = {**params_of(name), **{k: v for k, v in params.items() if v is not None}}
    return float(SCHEDULES.get(name)(epoch - 1, epochs, warmup, lr, **values))


def problems(name: str, epochs: int | None, warmup: int | None, params: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` for what schedule ``name`` cannot run: a param it does not take, a warm-up that
    leaves no epoch, onecycle without a rising phase. ``params``: the ``train.schedule`` params that are set."""
    taken = params_of(name)
    found = [(key, f"{key} is not a param of schedule {name} (its params: {', '.join(taken) or 'none'})")
             for key in params if key not in taken]
    if warmup is not None and epochs is not None and warmup >= epochs:
        found.append(("warmup_epochs", f"a warm-up of {warmup} epoch(s) leaves none of the {epochs} epoch(s) a trial "
                      "trains for the schedule; make it shorter than train.epochs"))
    least = getattr(SCHEDULES.get(name), "min_warmup", 0)
    if warmup is not None and warmup < least:
        found.append(("warmup_epochs", f"schedule {name} needs warmup_epochs >= {least}"))
    return found
