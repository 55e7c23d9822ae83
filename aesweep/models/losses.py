"""Loss terms as free functions, registered by name in ``registry.LOSS_TERMS``; an objective is their sum.

Every term has the signature ``term(out: AEOutput, batch: Batch, **knobs) -> scalar tensor``. A term reads the
knobs it needs by keyword (recon, mae_weight, prior, temperature, ...) and ignores the others, so the training
loop can hand every term the same knob dict. ``objective_loss`` sums the terms of a ``variants.Objective`` and
returns each unweighted term too, logged as ``loss/<name>``; a term that goes non-finite is identifiable.

Reductions (the scale each weight is relative to):
- recon: mean over every element (batch, channel, pixel) by default: the scale of ``test/mse`` and AE papers.
  A beta (KL or MMD weight) is therefore relative to a per-element reconstruction, not to the per-image ELBO
  sum of VAE papers; ``reduction="sum"`` gives that convention (sum over pixels, mean over the batch), and
  ``beta_elbo = beta_here / (C*H*W)``.
- kl and l1_latent: sum over latent dimensions, mean over the batch (per-sample quantities).
- mmd: a scalar estimate between two distributions (no per-sample reduction).
- nt_xent, supcon, cross_entropy: mean over anchors / samples; softmax_mae: mean over samples and classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aesweep.models.model import AEOutput
from aesweep.registry import LOSS_TERMS

if TYPE_CHECKING:  # variants may come to import this module; the type is all we need from it
    from aesweep.spec.variants import Objective

# Bandwidths of the multi-scale RBF kernel of ``mmd2``, as fractions of 2*D (the expected squared distance
# between two N(0, I_D) samples). A fixed set, rather than the median heuristic, keeps the loss a fixed
# function of z, and the spread covers both a collapsed code and one far from the prior.
MMD_SCALES = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Batch:
    """What the loss terms see besides the model output.

    x: ``(B, C, H, W)`` the input the model was fed (possibly corrupted or augmented).
    target: ``(B, C, H, W)`` the clean image in [0, 1] that ``recon`` compares ``out.x_hat`` with.
    labels: ``(B,)`` int64 class labels, or None for unsupervised variants.
    view2: the model output for the second augmented view of the same images (two-view variants), else None.
      The first view's output is the ``out`` passed to every term; row i of both views is the same image.
    """

    x: Tensor
    target: Tensor
    labels: Tensor | None = None
    view2: AEOutput | None = None


# ----------------------------------------------------------------------------------------------------
# Reconstruction


@LOSS_TERMS.register("recon")
def recon(
    out: AEOutput,
    batch: Batch,
    *,
    recon: str = "mse",
    mae_weight: float = 1.0,
    reduction: str = "mean",
    **_: Any,
) -> Tensor:
    """Reconstruction of ``batch.target`` by ``out.x_hat``: mse | bce | mae | mse+mae.

    mse+mae is mse + mae_weight * mae.
    reduction "mean": mean over every element (default); "sum": sum over C, H, W, mean over the batch.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"recon: reduction must be 'mean' or 'sum', got {reduction!r}")
    x_hat, target = out.x_hat, batch.target
    parts = {
        "mse": lambda: F.mse_loss(x_hat, target, reduction="none"),
        "mae": lambda: F.l1_loss(x_hat, target, reduction="none"),
        # x_hat comes out of a Sigmoid; binary_cross_entropy clamps log at -100: saturated pixels stay finite.
        "bce": lambda: F.binary_cross_entropy(x_hat, target, reduction="none"),
        "mse+mae": lambda: (
            F.mse_loss(x_hat, target, reduction="none")
            + mae_weight * F.l1_loss(x_hat, target, reduction="none")
        ),
    }
    if recon not in parts:
        raise ValueError(f"recon: unknown reconstruction loss {recon!r}; known: {', '.join(parts)}")
    per_element = parts[recon]()
    return per_element.mean() if reduction == "mean" else per_element.flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------------------------------
# Latent regularisers


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _prior_tensors(prior: Any, like: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, std) of the diagonal Gaussian prior as tensors broadcastable to ``like`` (B, D).

    prior: None (standard normal), a mapping or an object with ``mean`` and ``std`` (spec.PriorConfig), each a
    scalar or a per-dimension sequence of length D.
    """
    if prior is None:
        mean, std = 0.0, 1.0
    elif isinstance(prior, Mapping):
        mean, std = prior.get("mean", 0.0), prior.get("std", 1.0)
    else:
        mean, std = prior.mean, prior.std
    dim = like.shape[-1]
    out = []
    for name, value in (("mean", mean), ("std", std)):
        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        if t.ndim > 1 or (t.ndim == 1 and t.numel() not in (1, dim)):
            raise ValueError(f"prior {name}: expected a scalar or {dim} values, got shape {tuple(t.shape)}")
        out.append(t)
    return out[0], out[1]


def kl_diag_gaussian(
    mu: Tensor, logvar: Tensor, prior_mean: Tensor | float = 0.0, prior_std: Tensor | float = 1.0
) -> Tensor:
    """Per-sample KL(N(mu, diag exp(logvar)) || N(prior_mean, diag prior_std^2)), summed over dims: ``(B,)``.

    Computed in float32 at least: under bf16 autocast the sum of small per-dimension terms loses its digits.
    """
    mu, logvar = _at_least_fp32(mu), _at_least_fp32(logvar)
    prior_mean = torch.as_tensor(prior_mean, dtype=mu.dtype, device=mu.device)
    prior_std = torch.as_tensor(prior_std, dtype=mu.dtype, device=mu.device)
    prior_var = prior_std**2
    kl = torch.log(prior_std) - 0.5 * logvar + (logvar.exp() + (mu - prior_mean) ** 2) / (2 * prior_var) - 0.5
    return kl.sum(-1)


@LOSS_TERMS.register("kl")
def kl(out: AEOutput, batch: Batch, *, prior: Any = None, **_: Any) -> Tensor:
    """Analytic KL(q(z|x) || prior) of a gaussian bottleneck, summed over latent dims, mean over the batch.

    prior: N(mean, diag std^2), mean and std scalar or per dimension (spec.PriorConfig, a dict, or None:
    the standard normal).
    """
    if out.mu is None or out.logvar is None:
        raise ValueError("kl: the model has no gaussian bottleneck (out.mu / out.logvar are None)")
    mean, std = _prior_tensors(prior, _at_least_fp32(out.mu))
    return kl_diag_gaussian(out.mu, out.logvar, mean, std).mean()


@LOSS_TERMS.register("l1_latent")
def l1_latent(out: AEOutput, batch: Batch, **_: Any) -> Tensor:
    """Sparsity penalty on the code: sum of |z| over latent dims, mean over the batch."""
    return _at_least_fp32(out.z).abs().sum(-1).mean()


def mmd2(x: Tensor, y: Tensor, *, unbiased: bool = True, scales: Sequence[float] = MMD_SCALES) -> Tensor:
    """Squared MMD between samples x ``(N, D)`` and y ``(M, D)`` under a multi-bandwidth RBF kernel.

    k(a, b) = mean over s in ``scales`` of exp(-||a - b||^2 / (2 * D * s)): bandwidths relative to 2*D, the
    mean squared distance of two N(0, I_D) draws, so one scale set serves every latent size. ``unbiased``: the
    U-statistic (diagonals of k(x, x) and k(y, y) left out; can be slightly negative, no bias towards
    collapse); else the V-statistic (biased, >= 0, exactly 0 for x == y).
    """
    d = x.shape[-1]
    xy = _at_least_fp32(torch.cat([x, y]))
    sq = torch.cdist(xy, xy).pow(2)
    k = torch.stack([torch.exp(-sq / (2 * d * s)) for s in scales]).mean(0)
    n = x.shape[0]
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        m = y.shape[0]
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return sxx + syy - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


@LOSS_TERMS.register("mmd")
def mmd(out: AEOutput, batch: Batch, *, mmd_unbiased: bool = True, **_: Any) -> Tensor:
    """MMD^2 between the batch of codes z and as many fresh draws of N(0, I); see ``mmd2`` (unbiased)."""
    z = out.z
    return mmd2(z, torch.randn_like(z), unbiased=mmd_unbiased)


# ----------------------------------------------------------------------------------------------------
# Two-view contrastive terms


def _two_views(out: AEOutput, batch: Batch, term: str) -> Tensor:
    """The L2-normalised embeddings of both views stacked ``(2B, P)``: projections, or z without a head."""
    if batch.view2 is None:
        raise ValueError(f"{term}: needs two views (batch.view2 is None)")
    p1 = out.projection if out.projection is not None else out.z
    p2 = batch.view2.projection if batch.view2.projection is not None else batch.view2.z
    return F.normalize(torch.cat([p1, p2]), dim=1)


def _similarity_logits(p: Tensor, temperature: float) -> Tensor:
    """Cosine similarities / temperature ``(2B, 2B)``, self-similarity masked out of every softmax."""
    logits = _at_least_fp32(p @ p.T) / temperature
    # The most negative finite value (not -inf) keeps 0 * logit products finite anywhere downstream.
    return logits.masked_fill(
        torch.eye(len(p), dtype=torch.bool, device=p.device), torch.finfo(logits.dtype).min
    )


@LOSS_TERMS.register("nt_xent")
def nt_xent(out: AEOutput, batch: Batch, *, temperature: float = 0.5, **_: Any) -> Tensor:
    """SimCLR NT-Xent: each of the 2B embeddings must pick its other view among the other 2B - 1; mean."""
    p = _two_views(out, batch, "nt_xent")
    b = len(p) // 2
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(p.device)
    return F.cross_entropy(_similarity_logits(p, temperature), targets)


@LOSS_TERMS.register("supcon")
def supcon(out: AEOutput, batch: Batch, *, temperature: float = 0.1, **_: Any) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over both views, mean over the 2B anchors.

    For anchor i the positives are every other embedding with its label (its other view included):
    loss_i = -1/|P(i)| * sum_{p in P(i)} log softmax_{a != i}(sim_ia / t)_p. The reference code's extra factor
    t / base_t is left out (it is 1 at its default t = base_t = 0.07).
    """
    if batch.labels is None:
        raise ValueError("supcon: needs labels (batch.labels is None)")
    p = _two_views(out, batch, "supcon")
    labels = torch.cat([batch.labels, batch.labels])
    eye = torch.eye(len(p), dtype=torch.bool, device=p.device)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = F.log_softmax(_similarity_logits(p, temperature), dim=1)
    # Every anchor has at least one positive (its other view), so the count never is 0.
    return -(log_prob * positives).sum(1).div(positives.sum(1)).mean()


# ----------------------------------------------------------------------------------------------------
# Supervised head


@LOSS_TERMS.register("cross_entropy")
def cross_entropy(out: AEOutput, batch: Batch, **_: Any) -> Tensor:
    """Cross-entropy of the classifier head's logits against the labels, mean over the batch."""
    if out.logits is None:
        raise ValueError("cross_entropy: the model has no classifier head (out.logits is None)")
    if batch.labels is None:
        raise ValueError("cross_entropy: needs labels (batch.labels is None)")
    return F.cross_entropy(out.logits, batch.labels)


@LOSS_TERMS.register("softmax_mae")
def softmax_mae(out: AEOutput, batch: Batch, **_: Any) -> Tensor:
    """MAE between the classifier head's softmax and the one-hot labels, mean over batch and classes.

    The classification-guided model of study 004 trains with "cross-entropy loss along with a secondary MAE loss
    between the softmax output and one-hot encoded targets"; its reduction is not stated, so this is the mean
    absolute error over every (sample, class) entry, as ``nn.L1Loss()`` gives: in [0, 2 / num_classes].
    """
    if out.logits is None:
        raise ValueError("softmax_mae: the model has no classifier head (out.logits is None)")
    if batch.labels is None:
        raise ValueError("softmax_mae: needs labels (batch.labels is None)")
    probs = torch.softmax(_at_least_fp32(out.logits), dim=1)
    return F.l1_loss(probs, F.one_hot(batch.labels, probs.shape[1]).to(probs.dtype))


# ----------------------------------------------------------------------------------------------------
# Objective


def objective_loss(
    objective: Objective, out: AEOutput, batch: Batch, **knobs: Any
) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted sum of ``objective.terms`` and each term's unweighted value.

    knobs: extra keyword arguments for the terms (e.g. ``recon="bce", mae_weight=0.5`` from ObjectiveConfig);
    they override ``objective.knobs``, except a None value, which means "not set" and never hides a default.
    Returns ``(total, {name: value})`` with scalar tensors; values keep their graph (call ``.item()`` or
    ``.detach()`` to log). A term weighted 0 is still computed for logging, without grad, and left out of the
    total so that it cannot turn the total non-finite.
    """
    kw = {**objective.knobs, **{k: v for k, v in knobs.items() if v is not None}}
    total = out.x_hat.new_zeros(())
    values: dict[str, Tensor] = {}
    for name, weight in objective.terms.items():
        term = LOSS_TERMS.get(name)
        if weight == 0:
            with torch.no_grad():
                values[name] = term(out, batch, **kw)
            continue
        values[name] = term(out, batch, **kw)
        total = total + weight * values[name]
    return total, values
