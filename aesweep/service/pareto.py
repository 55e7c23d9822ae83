"""Pareto ranking of metric vectors, every metric minimised (negate a metric to be maximised): dominance,
non-dominated fronts, the epsilon-net order inside a front (Schmucker et al. 2021), the Pareto mask and the 2-D
hypervolume. Pure functions, shared by MO-ASHA's rungs, the live view's front and the report's Pareto plot.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

Vector = Sequence[float]  # one trial's metrics at a rung, every one to be minimised (max metrics negated)


# --------------------------------------------------------------------------------------------------------------
# Ranking (pure functions; all vectors are minimised)


def dominates(a: Vector, b: Vector) -> bool:
    """a is at least as good as b on every metric and strictly better on one (minimisation)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def nondominated_fronts(points: Sequence[Vector]) -> list[list[int]]:
    """Indices of ``points`` by front: the first list is the Pareto set, the next the Pareto set of the rest, ...
    Within a front, indices keep their input order. O(n^2 m) per front: a rung holds at most a few hundred."""
    remaining = list(range(len(points)))
    fronts: list[list[int]] = []
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def _normalised(points: Sequence[Vector]) -> list[list[float]]:
    """Each metric scaled to [0, 1] over ``points`` (a constant metric becomes 0)."""
    columns = list(zip(*points, strict=True))
    lows = [min(c) for c in columns]
    spans = [max(c) - lo for c, lo in zip(columns, lows, strict=True)]
    return [[(v - lo) / span if span > 0 else 0.0 for v, lo, span in zip(p, lows, spans, strict=True)]
            for p in points]


def epsilon_net_order(points: Sequence[Vector], members: Sequence[int]) -> list[int]:
    """``members`` (indices into ``points``) in epsilon-net order: the best on the first metric first, then each
    time the one farthest from all taken so far. Distances on ``points`` as given (normalise before). Ties go to
    the earlier index, so the order is deterministic."""
    if not members:
        return []
    first = min(members, key=lambda i: (points[i][0], tuple(points[i][1:]), i))
    order = [first]
    nearest = {i: math.dist(points[i], points[first]) for i in members if i != first}
    while nearest:
        pick = max(nearest, key=lambda i: (nearest[i], -i))
        order.append(pick)
        del nearest[pick]
        for i in nearest:
            nearest[i] = min(nearest[i], math.dist(points[i], points[pick]))
    return order


def rank_order(points: Sequence[Vector]) -> list[int]:
    """Every index of ``points``, best first: fronts in order, each front in epsilon-net order."""
    if not points:
        return []
    scaled = _normalised(points)
    return [i for front in nondominated_fronts(points) for i in epsilon_net_order(scaled, front)]


def positions(points: Sequence[Vector]) -> list[int]:
    """Each point's 0-based position in ``rank_order``; identical vectors share the best position among them."""
    pos = [0] * len(points)
    for place, i in enumerate(rank_order(points)):
        pos[i] = place
    best: dict[tuple[float, ...], int] = {}
    for i, p in enumerate(points):
        key = tuple(p)
        best[key] = min(best.get(key, pos[i]), pos[i])
    return [best[tuple(p)] for p in points]




def pareto_mask(points: Sequence[Vector]) -> list[bool]:
    """True for the points no other point dominates (minimisation)."""
    return [not any(dominates(q, p) for q in points) for p in points]


def hypervolume_2d(points: Sequence[Vector], reference: Vector) -> float:
    """Area dominated by ``points`` (two metrics, both minimised) and bounded by ``reference``; points not
    strictly better than the reference on both metrics add nothing. Checked against Optuna's WFG implementation
    (tests/service/test_moasha.py)."""
    inside = sorted((float(x), float(y)) for x, y in points if x < reference[0] and y < reference[1])
    area, ceiling = 0.0, float(reference[1])
    for x, y in inside:  # by the first metric, ascending: each point adds the strip below the lowest y so far
        if y < ceiling:
            area += (reference[0] - x) * (ceiling - y)
            ceiling = y
    return area


# --------------------------------------------------------------------------------------------------------------
# The scheduler
