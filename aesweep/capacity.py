"""Will the largest trial of a spec fit the memory of the device that would train it? Checked before anything runs.

The model is built on PyTorch's ``meta`` device: every parameter and activation has its real shape and no storage,
so a model of 10^13 parameters costs microseconds and no memory to measure. The estimate is a floor of what
training needs (weights, their gradients and Adam's two moments in float32, plus one batch's activations kept for
the backward pass); a spec under it may still run out of memory at run time, which is then a FAILED trial with
the reason, never a traceback.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from aesweep.spec import (
    Choice,
    Distribution,
    Grid,
    IntRange,
    LogUniform,
    ModelConfig,
    Problem,
    SweepSpec,
    Uniform,
)

# The in-memory image shape of each dataset (C, H, W), without loading it.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "shapes": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
    "frey_face": (1, 28, 20),
}
# A GPU trial checked on a machine without one (a laptop submitting to a cluster) is held to the largest single
# accelerator memory on sale (NVIDIA H200: 141 GB), so only what fits no GPU at all is rejected there.
LARGEST_GPU_BYTES = 141 * 10**9
# Bytes per parameter while training with Adam in float32: weight, gradient, two moments.
BYTES_PER_PARAMETER = 4 * 4
# Fields tried, in order, to name the one that makes a model too large (reset to its default, does it fit?).
CULPRITS = ("latent_dim", "width", "widths", "depth", "projection_dim", "head_widths")


@dataclass(frozen=True)
class Estimate:
    """What one trial needs: ``parameters`` (count) and ``bytes`` (training floor, see the module docstring)."""

    parameters: int
    bytes: int


def largest(path: str, dist: Distribution) -> Any:
    """A chooser for ``SweepSpec.resolve``: the high end of every numeric distribution (the largest model the
    sweep can draw), the first option of a categorical one."""
    if isinstance(dist, IntRange | Uniform | LogUniform):
        return dist.bounds[1]
    if isinstance(dist, Choice | Grid):
        options = dist.options
        if all(isinstance(o, int | float) and not isinstance(o, bool) for o in options):
            return max(options)
        return options[0]
    return dist.first()


def estimate(trial: Any, batch_size: int | None = None) -> Estimate | None:
    """Parameters and training-memory floor of a TrialConfig's model, built on the meta device; None if the
    dataset's shape is not known here (a dataset registered elsewhere) or the model cannot be built on meta."""
    import torch

    from aesweep import variants
    from aesweep.model import AutoEncoder

    shape = IMAGE_SHAPES.get(trial.dataset.name)
    if shape is None:
        return None
    o = trial.objective
    objective = variants.compose(o.variant, {k: getattr(o, k) for k in variants.KNOBS}, o.recon_weight,
                                 elements_per_image=math.prod(shape), kl_scale=o.kl_scale,
                                 latent_dim=trial.model.latent_dim)
    try:
        with torch.device("meta"):
            model = AutoEncoder.from_config(trial.model, objective, shape, 10)
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
    except Exception:  # resolving problems are the spec checks' to report
        return []
    limit, where = device_memory(spec.resources.gpu)
    # Without building anything (or importing torch: ~2 s and 0.6 GB for the CUDA wheel): every model maps its
    # encoder's feature to z with a Linear and its decoder starts from z with one, so it has at least
    # 2 * latent_dim weights. An absurd latent size is rejected here in milliseconds.
    floor = 2 * trial.model.latent_dim * BYTES_PER_PARAMETER
    if floor > limit:
        return [spec.problem(("model", "latent_dim"), f"the largest trial needs more than {_gib(floor)} to train "
                             f"(at least {2 * trial.model.latent_dim:.3g} parameters), more than {where} "
                             f"({_gib(limit)})")]
    need = estimate(trial)
    if need is None:
        return []
    if need.bytes <= limit:
        return []
    culprit = ("model",)
    for name in CULPRITS:
        value = getattr(trial.model, name, None)
        default = ModelConfig.model_fields[name].get_default(call_default_factory=True) \
            if name in ModelConfig.model_fields else None
        if value is None or value == default:
            continue
        smaller = estimate(trial.model_copy(update={"model": trial.model.model_copy(update={name: default})}))
        if smaller is not None and smaller.bytes <= limit:
            culprit = ("model", name)
            break
    if culprit == ("model",) and trial.train.batch_size > 1:
        smaller = estimate(trial, batch_size=1)
        if smaller is not None and smaller.bytes <= limit:
            culprit = ("train", "batch_size")
    size = ("a tensor too large for PyTorch to address (past 2^63)" if need.parameters < 0 else
            f"at least {_gib(need.bytes)} to train ({need.parameters:.3g} parameters)")
    return [spec.problem(culprit, f"the largest trial needs {size}, more than {where} ({_gib(limit)})")]


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**40 * 10 else f"{n / 2**40:,.0f} TiB"
