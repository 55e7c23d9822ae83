"""Name -> implementation registries.

Extension is by registry, never by a growing if/elif: a dataset, backbone, loss term, metric or probe is one
decorated function or class in its own module. An unknown name fails with the list of known names.

This module imports nothing heavy. The registering modules (data, nets, losses, ...) import torch, so they are
imported lazily by ``load_all`` when a caller needs every name (``aesweep list``, a spec naming something that is
not built in). Spec validation checks built-in names against ``catalog``'s tables, without importing them.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Modules that fill the registries when imported. A later module (metrics, probes, ...) is added here once.
REGISTERING_MODULES = (
    "aesweep.data.datasets",
    "aesweep.models.nets",
    "aesweep.models.losses",
    "aesweep.spec.variants",
    "aesweep.evaluation.metrics",
    "aesweep.evaluation.probes",
    "aesweep.evaluation.clustering",
    "aesweep.evaluation.figures",
    "aesweep.spec.schedules",
    "aesweep.evaluation.baselines",
)


class UnknownNameError(KeyError):
    """Raised for a name that no module registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


class Registry(Generic[T]):
    """A named table of implementations, filled by ``@REGISTRY.register("name")``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            text = doc if doc is not None else (getattr(obj, "__doc__", None) or "")
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return obj

        return add

    def add(self, name: str, obj: T, doc: str = "") -> T:
        """Register a plain value (a table row rather than a decorated function)."""
        return self.register(name, doc)(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def doc(self, name: str) -> str:
        return self._docs.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


DATASETS: Registry[Any] = Registry("dataset")
BACKBONES: Registry[Any] = Registry("backbone")
LOSS_TERMS: Registry[Any] = Registry("loss term")
VARIANTS: Registry[Any] = Registry("variant")
METRICS: Registry[Any] = Registry("metric")
PROBES: Registry[Any] = Registry("probe")
CLUSTERERS: Registry[Any] = Registry("clusterer")
FIGURES: Registry[Any] = Registry("figure")
SCHEDULES: Registry[Any] = Registry("lr schedule")

ALL = {
    "datasets": DATASETS,
    "backbones": BACKBONES,
    "variants": VARIANTS,
    "loss terms": LOSS_TERMS,
    "metrics": METRICS,
    "probes": PROBES,
    "clustering": CLUSTERERS,
    "figures": FIGURES,
    "lr schedules": SCHEDULES,
}

_loaded = False


def load_all() -> None:
    """Import every registering module once, so the registries hold every name."""
    global _loaded
    if _loaded:
        return
    for module in REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            # A module that a later issue adds may not exist yet; anything else missing is a real error.
            if err.name != module:
                raise
    _loaded = True
