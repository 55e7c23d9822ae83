"""Name -> implementation registries, and the declarations spec validation reads without importing them.

Extension is by registry, never by a growing if/elif: a dataset, backbone, loss term, metric, probe, clusterer or
figure is one decorated function (or one ``add`` of a table row) in the registry's home module, with its metadata
in the declaration: ``@DATASETS.register("cifar10", shape=(3, 32, 32))``. An unknown name fails with the list of
known names.

The home modules import torch and scikit-learn (about 2.5 CPU s and 0.65 GB resident with the CUDA wheel). Checking
a spec needs none of that for a built-in name: ``declared`` reads the declarations from the home module's source
(names and literal metadata, in source order) without running it. A name that is not declared there is looked up
after ``load_all()``, so that a name registered elsewhere still validates and an unknown name's error lists every
registered one. Two homes are torch-free (variants, lr schedules) and register names computed at import; for those,
importing the home is the declaration.
"""
from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent


class UnknownNameError(KeyError):
    """Raised for a name that no module registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


class Registry(Generic[T]):
    """A named table of implementations, filled by ``@REGISTRY.register("name", **meta)`` in module ``home``.

    ``variable``: the name the home module uses for this registry (how ``declared`` recognises its declarations);
    ``torch_free``: the home imports nothing heavy and may compute its names, so importing it is the declaration.
    A registry without a home (a module's private table) is declared by importing its module.
    """

    def __init__(self, kind: str, home: str | None = None, variable: str | None = None, torch_free: bool = False):
        self.kind, self.home, self.variable, self.torch_free = kind, home, variable, torch_free
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, doc: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Register the decorated object as ``name``; ``meta``: literal facts validation needs (``declared``)."""
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            text = doc if doc is not None else (getattr(obj, "__doc__", None) or "")
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            self._meta[name] = dict(meta)
            return obj

        return add

    def add(self, name: str, obj: T, doc: str = "", **meta: Any) -> T:
        """Register a plain value (a table row rather than a decorated function)."""
        return self.register(name, doc, **meta)(obj)

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was registered with."""
        self.get(name)
        return dict(self._meta[name])

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_registration_order(self) -> list[str]:
        """The names in the order they were registered (for figures: the order the spec lists them)."""
        return list(self._items)

    def doc(self, name: str) -> str:
        return self._docs.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


DATASETS: Registry[Any] = Registry("dataset", "aesweep.data.datasets", "DATASETS")
BACKBONES: Registry[Any] = Registry("backbone", "aesweep.models.nets", "BACKBONES")
LOSS_TERMS: Registry[Any] = Registry("loss term", "aesweep.models.losses", "LOSS_TERMS")
VARIANTS: Registry[Any] = Registry("variant", "aesweep.spec.variants", "VARIANTS", torch_free=True)
METRICS: Registry[Any] = Registry("metric", "aesweep.evaluation.metrics", "METRICS")
PROBES: Registry[Any] = Registry("probe", "aesweep.evaluation.probes", "PROBES")
CLUSTERERS: Registry[Any] = Registry("clusterer", "aesweep.evaluation.clustering", "CLUSTERERS")
FIGURES: Registry[Any] = Registry("figure", "aesweep.evaluation.figures", "FIGURES")
# Sample quality (eval.sample_quality): the feature extractors the measures compare real and generated images in,
# and the measures themselves (FID, precision / recall / density / coverage).
SAMPLE_FEATURES: Registry[Any] = Registry("sample feature extractor", "aesweep.evaluation.sample_features",
                                          "SAMPLE_FEATURES")
SAMPLE_QUALITY: Registry[Any] = Registry("sample-quality measure", "aesweep.evaluation.sample_quality",
                                         "SAMPLE_QUALITY")
# Disentanglement measures (eval.disentanglement) on datasets with known generative factors: MIG, SAP, DCI, ...
DISENTANGLEMENT: Registry[Any] = Registry("disentanglement metric", "aesweep.evaluation.disentanglement",
                                          "DISENTANGLEMENT")
SCHEDULES: Registry[Any] = Registry("lr schedule", "aesweep.spec.schedules", "SCHEDULES", torch_free=True)

ALL = {
    "datasets": DATASETS,
    "backbones": BACKBONES,
    "variants": VARIANTS,
    "loss terms": LOSS_TERMS,
    "metrics": METRICS,
    "probes": PROBES,
    "clustering": CLUSTERERS,
    "figures": FIGURES,
    "sample features": SAMPLE_FEATURES,
    "sample quality": SAMPLE_QUALITY,
    "disentanglement": DISENTANGLEMENT,
    "lr schedules": SCHEDULES,
}

# Modules that fill a registry when imported: the homes, and baselines (its own registry, and eval-only variants).
REGISTERING_MODULES = tuple(dict.fromkeys([reg.home for reg in ALL.values()] + ["aesweep.evaluation.baselines"]))

_loaded = False


def load_all() -> None:
    """Import every registering module once, so the registries hold every name."""
    global _loaded
    if _loaded:
        return
    for module in REGISTERING_MODULES:
        importlib.import_module(module)
    _loaded = True


_declared: dict[int, dict[str, dict[str, Any]]] = {}


def _literal_name(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _read_declarations(reg: Registry[Any]) -> dict[str, dict[str, Any]]:
    """The ``reg.variable.register(...)`` and ``reg.variable.add(...)`` calls of ``reg.home``, read as source.

    Matches ``VARIABLE.register("name", ..., key=literal)`` and ``registry.VARIABLE.add("name", obj, ..., key=...)``
    with a literal name; metadata values must be literals (``ast.literal_eval``), else the module would have to run.
    """
    path = PACKAGE_DIR.joinpath(*reg.home.split(".")[1:]).with_suffix(".py")
    found: list[tuple[int, str, dict[str, Any]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("register", "add") and node.args):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        name = _literal_name(node.args[0])
        if owner_name != reg.variable or name is None:
            continue
        meta = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg not in (None, "doc")}
        found.append((node.lineno, name, meta))
    # ast.walk is breadth-first; the declarations' order is the source order (the spec lists figures in it).
    return {name: meta for _, name, meta in sorted(found, key=lambda row: row[0])}


def declared(reg: Registry[Any]) -> dict[str, dict[str, Any]]:
    """The built-in names of ``reg`` and their metadata, in declaration order, without importing torch."""
    if id(reg) not in _declared:
        if reg.home is None:
            load_all()
            return {name: reg.meta(name) for name in reg._items}
        if reg.torch_free:
            importlib.import_module(reg.home)
            _declared[id(reg)] = {name: reg.meta(name) for name in reg._items}
        else:
            _declared[id(reg)] = _read_declarations(reg)
    return _declared[id(reg)]


def known(reg: Registry[Any], name: str) -> bool:
    """Whether ``name`` is registered in ``reg``: a declared built-in without imports, else after ``load_all``."""
    if name in declared(reg):
        return True
    load_all()
    return name in reg


def check(reg: Registry[Any], name: str) -> None:
    """Raise ``UnknownNameError`` (listing every registered name) unless ``name`` is known to ``reg``."""
    if not known(reg, name):
        reg.get(name)


def meta(reg: Registry[Any], name: str) -> dict[str, Any]:
    """The metadata of ``name`` in ``reg``: its declaration for a built-in, else its registration."""
    if name in declared(reg):
        return dict(declared(reg)[name])
    load_all()
    return reg.meta(name)
