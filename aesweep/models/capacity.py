"""Will the largest trial of a spec fit the memory of the device that would train it? Checked before anything runs.

Two steps. First, without importing torch (about 2 CPU s and 0.6 GB for the CUDA wheel), a lower bound of the
model's parameters from its shapes alone (``parameter_floor``: the backbone's weights from
``backbone_rules``, the bottleneck and the heads, biases and norms left out): an absurd size (a latent of 10^9,
a width of 10^6) is rejected in microseconds, in a process that never imports torch. Python's integers do not
overflow, so a width of 10^17 is just a large number. Then, for a model whose floor fits, the exact count: the
model is built on PyTorch's ``meta`` device, where every parameter and activation has its real shape and no
storage, so a model of 10^13 parameters costs milliseconds and no memory to measure.

The estimate is a floor of what training needs (weights, their gradients and Adam's two moments in float32, plus
one batch's activations kept for the backward pass); a spec under it may still run out of memory at run time,
which is then a FAILED trial with the reason, never a traceback.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aesweep import registry
from aesweep.spec import backbones, variants
from aesweep.spec.distributions import Distribution
from aesweep.spec.problems import Problem, SpecError
from aesweep.spec.sweep_spec import SweepSpec
from aesweep.spec.trial import ModelConfig

# A GPU trial checked on a machine without one (a laptop submitting to a cluster) is held to the largest single
# accelerator memory on sale (NVIDIA H200: 141 GB), so only what fits no GPU at all is rejected there.
LARGEST_GPU_BYTES = 141 * 10**9
# Bytes per parameter while training with Adam in float32: weight, gradient, two moments.
BYTES_PER_PARAMETER = 4 * 4
# Fields tried, in order, to name the one that makes a model too large (reset to its default, does it fit?).
CULPRITS = ("latent_dim", "width", "widths", "decoder_widths", "channels", "depth", "projection_dim", "head_widths")
# Classes the classifier head is sized for when the estimate is made (every built-in labelled dataset has 10).
NUM_CLASSES = 10


@dataclass(frozen=True)
class Estimate:
    """What one trial needs: ``parameters`` (count) and ``bytes`` (training floor, see the module docstring)."""

    parameters: int
    bytes: int


def largest(path: str, dist: Distribution) -> Any:
    """A chooser for ``SweepSpec.resolve``: every distribution's high end (the largest model the sweep can
    draw; a categorical one of non-numbers gives its first option)."""
    return dist.high()


def _objective(trial: Any, shape: tuple[int, int, int]) -> variants.Objective:
    o = trial.objective
    return variants.compose(o.variant, {k: getattr(o, k) for k in variants.KNOBS}, o.recon_weight,
                            elements_per_image=math.prod(shape), kl_scale=o.kl_scale,
                            latent_dim=trial.model.latent_dim)


def image_shape(dataset: str) -> tuple[int, int, int] | None:
    """The in-memory image shape (C, H, W) a dataset declares (``registry.DATASETS``' ``shape``), without loading
    it; None where its registration does not say."""
    shape = registry.meta(registry.DATASETS, dataset).get("shape")
    return tuple(shape) if shape is not None else None


def parameter_floor(trial: Any) -> int | float:
    """A lower bound of the parameters of a TrialConfig's model, from its shapes alone (no torch): the backbone's
    weights (``backbones.Rules.weights``), the bottleneck's and the heads'. For a dataset or backbone not
    built in, the bottleneck alone: a Linear(feature_dim >= 1, latent_dim) has at least 2 * latent_dim
    parameters. ``math.inf`` where a layer's size is past what a float can hold (a width of 1e308)."""
    model = trial.model
    generic = 2 * model.latent_dim
    shape = image_shape(trial.dataset.name)
    rules = backbones.BUILTIN.get(model.backbone)
    if shape is None or rules is None or rules.weights is None:
        return generic
    settings = backbones.settings_of(model)
    try:
        weights, feature_dim = rules.weights(shape, model.latent_dim, model.width, model.depth, **settings)
        objective = _objective(trial, shape)
    except OverflowError:  # round(width * channels) of an infinite product
        return math.inf
    except ValueError:  # an inconsistent combination of searched values: building the trial reports it
        return generic
    z = model.latent_dim
    weights += feature_dim * z * (2 if objective.bottleneck == "gaussian" else 1)
    if "projection" in objective.heads:
        hidden = max(z, model.projection_dim)
        weights += z * hidden + hidden * model.projection_dim
    if "classifier" in objective.heads:
        dims = [z, *model.head_widths, NUM_CLASSES]
        weights += sum(a * b for a, b in zip(dims, dims[1:], strict=False))
    return max(weights, generic)


def estimate(trial: Any, batch_size: int | None = None) -> Estimate | None:
    """Parameters and training-memory floor of a TrialConfig's model, built on the meta device; None if the
    dataset's shape is not known here (a dataset registered elsewhere) or the model cannot be built on meta."""
    # Deferred: validation rejects most specs on the torch-free parameter floor, in tens of MB.
    import torch

    from aesweep.models.model import AutoEncoder

    shape = image_shape(trial.dataset.name)
    if shape is None:
        return None
    objective = _objective(trial, shape)
    try:
        with torch.device("meta"):
            model = AutoEncoder.from_config(trial.model, objective, shape, NUM_CLASSES)
    except (RuntimeError, TypeError, OverflowError, ValueError, NotImplementedError) as err:
        if "overflow" in str(err).lower():  # a size past 2^63: no device anywhere holds that tensor
            return Estimate(parameters=-1, bytes=sys.maxsize)
        return None
    parameters = sum(p.numel() for p in model.parameters())
    activations = 0

    def count(_module, _inputs, output) -> None:
        nonlocal activations
        for t in output if isinstance(output, tuple | list) else [output]:
            if isinstance(t, torch.Tensor):
                activations += t.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        x = torch.empty((batch_size or trial.train.batch_size, *shape), device="meta")
        model(x)
    except Exception:  # an op without a meta kernel: parameters alone still bound the model from below
        activations = 0
    finally:
        for h in hooks:
            h.remove()
    # Activations are kept for backward and get a gradient of their own: twice their float32 size.
    return Estimate(parameters, parameters * BYTES_PER_PARAMETER + activations * 4 * 2)


def device_memory(gpu: float) -> tuple[int, str]:
    """Bytes a trial can use and the device's name: this machine's RAM for a CPU trial, its first GPU's memory
    (times the trial's share) for a GPU trial, or the largest accelerator if this machine has none."""
    if gpu > 0:
        try:
            import torch

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                return int(props.total_memory * min(gpu, 1.0)), f"{min(gpu, 1.0):g} of a {props.name}"
        except Exception:
            pass
        return LARGEST_GPU_BYTES, "any GPU on sale (141 GB)"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"


def problems(spec: SweepSpec) -> list[Problem]:
    """One problem if the largest model ``spec`` can draw cannot fit the memory of the device that trains it."""
    try:
        trial = spec.resolve(largest)
    except SpecError:  # the largest combination is not a valid trial: the spec checks report why
        return []
    # Without importing torch: a GPU trial is first held to the largest GPU there is, whatever this machine has.
    gpu = spec.resources.gpu
    limit, where = (LARGEST_GPU_BYTES, "any GPU on sale (141 GB)") if gpu > 0 else device_memory(gpu)
    floor = parameter_floor(trial)
    if floor * BYTES_PER_PARAMETER > limit:
        return [_floor_problem(spec, trial, floor, limit, where)]
    if gpu > 0:
        limit, where = device_memory(gpu)
        if floor * BYTES_PER_PARAMETER > limit:
            return [_floor_problem(spec, trial, floor, limit, where)]
    need = estimate(trial)
    if need is None:
        return []
    if need.bytes <= limit:
        return []

    def fits(t: Any, batch_size: int | None = None) -> bool:
        smaller = estimate(t, batch_size)
        return smaller is not None and smaller.bytes <= limit

    culprit = _culprit(trial, fits)
    if culprit == ("model",) and trial.train.batch_size > 1 and fits(trial, batch_size=1):
        culprit = ("train", "batch_size")
    size = ("a tensor too large for PyTorch to address (past 2^63)" if need.parameters < 0 else
            f"at least {_gib(need.bytes)} to train ({need.parameters:.3g} parameters)")
    return [spec.problem(culprit, f"the largest trial needs {size}, more than {where} ({_gib(limit)})")]


def _floor_problem(spec: SweepSpec, trial: Any, floor: int | float, limit: int, where: str) -> Problem:
    """The problem of a model whose parameter floor does not fit ``limit`` (no torch imported)."""
    culprit = _culprit(trial, lambda t: parameter_floor(t) * BYTES_PER_PARAMETER <= limit)
    size = ("layers past the largest float (10^308 units)" if math.isinf(floor) else
            f"more than {_gib(floor * BYTES_PER_PARAMETER)} to train (at least {_sci(floor)} parameters)")
    return spec.problem(culprit, f"the largest trial needs {size}, more than {where} ({_gib(limit)})")


def _culprit(trial: Any, fits: Callable[[Any], bool]) -> tuple:
    """``("model", field)`` for the first of CULPRITS that, reset to its default, makes the trial fit; else
    ``("model",)``."""
    for name in CULPRITS:
        value = getattr(trial.model, name, None)
        default = ModelConfig.model_fields[name].get_default(call_default_factory=True)
        if value is None or value == default:
            continue
        if fits(trial.model_copy(update={"model": trial.model.model_copy(update={name: default})})):
            return ("model", name)
    return ("model",)


def _gib(n: int) -> str:
    if n < 2**40 * 10:
        return f"{n / 2**30:,.1f} GiB"
    try:
        tib: int | float = n / 2**40
    except OverflowError:  # an integer past the largest float
        tib = n // 2**40
    return f"{tib:,.0f} TiB" if tib < 1e15 else f"{_sci(tib)} TiB"


def _sci(n: int | float) -> str:
    """``n`` to 3 significant digits (``4e+09``), also for an integer past the largest float."""
    try:
        return f"{n:.3g}"
    except OverflowError:
        digits = str(int(n))
        return f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"
