"""The Pareto ranking MO-ASHA, the live view and the report share (aesweep.service.pareto)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from aesweep.service import pareto


def test_nondominated_fronts_and_epsilon_net_order():
    points = [[1, 5], [5, 1], [3, 3], [4, 4], [2, 6], [6, 6]]  # minimised
    assert pareto.nondominated_fronts(points) == [[0, 1, 2], [3, 4], [5]]
    # Front 1 by epsilon-net: the best on the first metric, then the farthest from it ([5, 1]), then [3, 3].
    assert pareto.rank_order(points)[:3] == [0, 1, 2]
    assert pareto.rank_order(points)[-1] == 5


def test_hypervolume_2d_matches_optuna():
    from optuna._hypervolume import compute_hypervolume

    rng = random.Random(0)
    for n in (1, 2, 5, 30):
        points = [[rng.random(), rng.random()] for _ in range(n)]
        ref = [1.1, 1.2]
        ours = pareto.hypervolume_2d(points, ref)
        theirs = compute_hypervolume(np.array(points), np.array(ref))
        assert ours == pytest.approx(theirs, rel=1e-12)
    assert pareto.hypervolume_2d([[2.0, 0.0]], [1.0, 1.0]) == 0.0  # outside the reference box
    assert pareto.hypervolume_2d([], [1.0, 1.0]) == 0.0
