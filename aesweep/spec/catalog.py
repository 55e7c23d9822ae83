"""The built-in names of every registry, known without importing the modules that register them.

The modules that fill the registries (data, nets, losses, metrics, probes, figures) import torch and scikit-learn:
about 2.5 CPU s and 0.65 GB resident with the CUDA wheel. Checking a spec's names needs none of that for a built-in
name, so the built-ins are listed here; a name that is not is looked up in its registry after
``registry.load_all()``, so that a name registered elsewhere still validates and an unknown name's error lists
every registered one. ``tests/test_spec.py`` asserts each table equals its registry after ``load_all``, so a table
cannot drift from the code.

Two registries are filled by torch-free modules (variants, lr schedules): importing that module is the check, and
they have no table here. Backbones are the rows of ``backbones.BUILTIN``.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

from aesweep import registry
from aesweep.spec import backbones


class Dataset(NamedTuple):
    """A built-in dataset's in-memory image ``shape`` (C, H, W) and whether it has class labels."""

    shape: tuple[int, int, int]
    labelled: bool = True


DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset((3, 32, 32)),
    "fashion_mnist": Dataset((1, 28, 28)),
    "frey_face": Dataset((1, 28, 20), labelled=False),  # the spec rejects variants that need labels on it
    "mnist": Dataset((1, 28, 28)),
    "shapes": Dataset((1, 28, 28)),
}
LOSS_TERMS = ("cross_entropy", "kl", "l1_latent", "mmd", "nt_xent", "recon", "softmax_mae", "supcon")
METRICS = ("bce", "bce_bits", "ergas", "mae", "mse", "psnr", "rmse", "ssim", "uqi", "uqi_block8")
PROBES = ("knn", "logreg", "mlp", "mlp_torch", "random_forest")
CLUSTERERS = ("gmm", "hdbscan", "kmeans")
# In the order ``eval.figures`` lists them (the spec's type is built from this tuple).
FIGURES = ("reconstructions", "latent_pca", "latent_tsne", "image_tsne", "interpolation", "traversals",
           "zeroed_dims", "prior_samples", "latent_2d", "decoded_grid", "latent_histograms", "latent_by_class",
           "factor_correlation", "loss_curves")

# model.initialise's schemes (the spec's type of model.init is built from this tuple).
INIT_SCHEMES = ("torch", "lecun_normal")
# The decoder's last activations, nets.OUTPUT_ACTIVATIONS' keys (the spec's type of model.output_activation is built
# from this tuple); the first is the default.
OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "linear")

# registry.ALL's key -> the built-in names (a table above), or the torch-free module that registers them.
BUILTIN: dict[str, frozenset[str] | str] = {
    "datasets": frozenset(DATASETS),
    "backbones": frozenset(backbones.BUILTIN),
    "variants": "aesweep.spec.variants",
    "loss terms": frozenset(LOSS_TERMS),
    "metrics": frozenset(METRICS),
    "probes": frozenset(PROBES),
    "clustering": frozenset(CLUSTERERS),
    "figures": frozenset(FIGURES),
    "lr schedules": "aesweep.spec.schedules",
}
_KEYS = {id(reg): key for key, reg in registry.ALL.items()}


def builtin(reg: registry.Registry, name: str) -> bool:
    """Whether ``name`` is a built-in of ``reg``, told without importing anything heavy."""
    names = BUILTIN.get(_KEYS.get(id(reg), ""), frozenset())
    if isinstance(names, str):  # a torch-free registering module: its registry is the table
        importlib.import_module(names)
        return name in reg
    return name in names


def known(reg: registry.Registry, name: str) -> bool:
    """Whether ``name`` is registered in ``reg``: a built-in without imports, else after ``load_all``."""
    if builtin(reg, name):
        return True
    registry.load_all()
    return name in reg


def check(reg: registry.Registry, name: str) -> None:
    """Raise ``UnknownNameError`` (listing every registered name) unless ``name`` is known to ``reg``."""
    if not known(reg, name):
        reg.get(name)


def labelled(dataset: str) -> bool:
    """Whether dataset ``dataset`` has class labels: the table for a built-in, else its factory's ``labelled``
    attribute (default True)."""
    if dataset in DATASETS:
        return DATASETS[dataset].labelled
    registry.load_all()
    return bool(getattr(registry.DATASETS.get(dataset), "labelled", True))


def image_shape(dataset: str) -> tuple[int, int, int] | None:
    """The in-memory image shape (C, H, W) of a built-in dataset, without loading it; None for another."""
    return DATASETS[dataset].shape if dataset in DATASETS else None
