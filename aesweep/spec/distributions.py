"""Distributions: a searched field's ``{choice: [...]}``, ``{grid: [...]}``, ``{uniform: [lo, hi]}``,
``{loguniform: [lo, hi]}`` or ``{int: [lo, hi]}``. Each kind owns its ends, its seeded draw and its Optuna
suggestion, so that no caller switches on kinds. A chooser ``(path, distribution) -> value`` resolves them.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Distributions. A field of type T in a searchable section accepts T or one of these; which kinds are allowed
# depends on T (uniform on an integer field is an error, not a silent rounding).

V = TypeVar("V")
DIST_KEYS = ("choice", "grid", "uniform", "loguniform", "int")


class Distribution(BaseModel):
    """A searched field. Each kind owns its ends and its seeded draw, so that no caller switches on kinds:
    ``low()`` / ``high()`` are the smallest and largest value it can yield (for categorical options: the
    smallest / largest when all are numbers, else the first), ``draw(rng)`` one value from ``random.Random``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def first(self) -> Any:
        """The value a trial takes when nobody searches: the first option or the low end."""
        raise NotImplementedError

    def low(self) -> Any:
        raise NotImplementedError

    def high(self) -> Any:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """One value from an Optuna trial (duck-typed: ``suggest_categorical`` / ``suggest_float`` /
        ``suggest_int``), under ``name``."""
        raise NotImplementedError


def _numeric(options: list[Any]) -> bool:
    return all(isinstance(o, int | float) and not isinstance(o, bool) for o in options)


class _Categorical(Distribution):
    """Choice and grid: a list of options, drawn with equal probability."""

    @property
    def options(self) -> list[Any]:
        raise NotImplementedError

    def first(self) -> Any:
        return self.options[0]

    def low(self) -> Any:
        return min(self.options) if _numeric(self.options) else self.options[0]

    def high(self) -> Any:
        return max(self.options) if _numeric(self.options) else self.options[0]

    def draw(self, rng: random.Random) -> Any:
        return self.options[rng.randrange(len(self.options))]

    def suggest(self, trial: Any, name: str) -> Any:
        options = self.options
        if all(o is None or isinstance(o, bool | int | float | str) for o in options):
            return trial.suggest_categorical(name, options)
        # Optuna's categories must be plain values: index the others (priors, lists).
        return options[trial.suggest_categorical(name, list(range(len(options))))]


class Choice(_Categorical, Generic[V]):
    choice: Annotated[list[V], Field(min_length=1)]

    @property
    def options(self) -> list[Any]:
        return list(self.choice)


class Grid(_Categorical, Generic[V]):
    """Like choice, but exhaustive: grid search runs every value (and TPE treats it as categorical)."""

    grid: Annotated[list[V], Field(min_length=1)]

    @property
    def options(self) -> list[Any]:
        return list(self.grid)


def _ordered(lo_hi: tuple[Any, Any]) -> None:
    if not lo_hi[0] < lo_hi[1]:
        raise ValueError(f"low {lo_hi[0]} must be below high {lo_hi[1]}")


class Uniform(Distribution, Generic[V]):
    uniform: tuple[V, V]

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        _ordered(self.uniform)
        return self

    def first(self) -> Any:
        return self.uniform[0]

    def low(self) -> Any:
        return self.uniform[0]

    def high(self) -> Any:
        return self.uniform[1]

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(*self.uniform)

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.uniform)


class LogUniform(Distribution, Generic[V]):
    loguniform: tuple[V, V]

    @model_validator(mode="after")
    def _check(self) -> LogUniform:
        if self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs a positive low end, got {self.loguniform[0]}")
        _ordered(self.loguniform)
        return self

    def first(self) -> Any:
        return self.loguniform[0]

    def low(self) -> Any:
        return self.loguniform[0]

    def high(self) -> Any:
        return self.loguniform[1]

    def draw(self, rng: random.Random) -> float:
        lo, hi = self.loguniform
        return min(hi, max(lo, math.exp(rng.uniform(math.log(lo), math.log(hi)))))  # exp(log(x)) may round out

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.loguniform, log=True)


class IntRange(Distribution, Generic[V]):
    """Integers lo..hi inclusive; ``log: true`` samples on a log scale (latent sizes)."""

    bounds: tuple[V, V] = Field(alias="int")
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.log and self.bounds[0] <= 0:
            raise ValueError(f"int with log: true needs a positive low end, got {self.bounds[0]}")
        _ordered(self.bounds)
        return self

    def first(self) -> Any:
        return self.bounds[0]

    def low(self) -> Any:
        return self.bounds[0]

    def high(self) -> Any:
        return self.bounds[1]

    def draw(self, rng: random.Random) -> int:
        """Uniform over lo..hi, or with ``log``: log-uniform over [lo - 1/2, hi + 1/2] rounded to the nearest
        integer (Optuna's rule), so that each integer k has probability proportional to log((k + 1/2) / (k - 1/2))
        and every octave gets the same share."""
        lo, hi = int(self.bounds[0]), int(self.bounds[1])
        if not self.log:
            return rng.randint(lo, hi)
        value = round(math.exp(rng.uniform(math.log(lo - 0.5), math.log(hi + 0.5))))
        return min(hi, max(lo, value))

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, *self.bounds, log=self.log)


def lowest(value: Any) -> Any:
    """The smallest value a field can take: its distribution's low end, or the value itself when fixed."""
    return value.low() if isinstance(value, Distribution) else value


def highest(value: Any) -> Any:
    """The largest value a field can take: its distribution's high end, or the value itself when fixed."""
    return value.high() if isinstance(value, Distribution) else value


def _dist_kind(value: Any) -> str | None:
    """Discriminator: the distribution kind of a mapping (or a parsed distribution), None for none or several."""
    if isinstance(value, Distribution):
        return kind_name(value)
    keys = [k for k in DIST_KEYS if isinstance(value, dict) and k in value]
    return keys[0] if len(keys) == 1 else None


def is_distribution_like(value: Any) -> bool:
    return isinstance(value, Distribution) or (isinstance(value, dict) and any(k in value for k in DIST_KEYS))


# Tags that pydantic puts into error locations; they are not part of the user's path and are stripped.
UNION_TAG = "~"

Chooser = Callable[[str, Distribution], Any]


def first_value(path: str, dist: Distribution) -> Any:
    """The chooser of `train-one` and of validation: first option, or the low end of a range."""
    return dist.first()


def replay(assignment: dict[str, Any], fallback: Chooser = first_value) -> Chooser:
    """A chooser that answers from a recorded ``{path: value}`` assignment."""
    return lambda path, dist: assignment[path] if path in assignment else fallback(path, dist)


def kind_name(dist: Distribution) -> str:
    return {Choice: "choice", Grid: "grid", Uniform: "uniform", LogUniform: "loguniform", IntRange: "int"}[
        next(c for c in (Choice, Grid, Uniform, LogUniform, IntRange) if isinstance(dist, c))]


