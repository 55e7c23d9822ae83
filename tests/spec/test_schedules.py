"""Learning-rate schedules: the rate at given epochs against hand-computed values and torch's own schedulers."""
from __future__ import annotations

import math

import pytest
import torch

from aesweep.registry import SCHEDULES
from aesweep.spec import schedules


def rates(name: str, epochs: int, warmup: int = 0, lr: float = 0.1, **params) -> list[float]:
    return [schedules.lr_at(name, e, epochs, warmup, lr, **params) for e in range(1, epochs + 1)]


def test_registered_names():
    assert SCHEDULES.names() == ["constant", "cosine", "onecycle", "step"]


def test_constant_with_linear_warmup():
    # Warm-up of 3 epochs: lr * 1/4, 2/4, 3/4, then the full rate from epoch 4 on.
    assert rates("constant", 6, warmup=3) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert rates("constant", 3) == [0.1, 0.1, 0.1]


def test_cosine_by_hand():
    # 1 warm-up epoch (lr / 2), then 4 cosine epochs t = 0..3 of T = 4 towards min_lr = 0.01:
    # 0.01 + 0.09 * (1 + cos(pi t / 4)) / 2.
    by_hand = [0.05, 0.1, 0.01 + 0.09 * (1 + math.sqrt(0.5)) / 2, 0.055, 0.01 + 0.09 * (1 - math.sqrt(0.5)) / 2]
    assert rates("cosine", 5, warmup=1, min_lr=0.01) == pytest.approx(by_hand)


def test_cosine_equals_torch_cosine_annealing():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.001)
    expected = []
    for _ in range(7):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    assert rates("cosine", 7, min_lr=0.001) == pytest.approx(expected)


def test_step_by_hand():
    # After 2 warm-up epochs (1/3, 2/3 of lr), halve every 3 epochs.
    assert rates("step", 10, warmup=2, step_epochs=3, gamma=0.5) == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert rates("step", 12)[9:] == pytest.approx([0.1, 0.01, 0.01])  # defaults: x0.1 after every 10 epochs


def test_onecycle_by_hand_and_against_torch():
    # 10 epochs, 3 rising: lr/25 at epoch 1, the peak at epoch 3, lr/(25e4) at epoch 10.
    r = rates("onecycle", 10, warmup=3)
    assert r[0] == pytest.approx(0.1 / 25) and r[2] == pytest.approx(0.1) and r[-1] == pytest.approx(0.1 / 25e4)
    assert r[1] == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) / 2)  # halfway up the cosine
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.3,
                                                      anneal_strategy="cos", cycle_momentum=False)
    expected = []
    for _ in range(10):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    assert r == pytest.approx(expected, rel=1e-6)


def test_problems():
    assert schedules.problems("cosine", 5, 5, {}) and schedules.problems("cosine", 5, 4, {}) == []
    assert schedules.problems("cosine", 5, 0, {"gamma": 0.5})[0][0] == "gamma"
    assert schedules.problems("onecycle", 5, 0, {})[0][0] == "warmup_epochs"
