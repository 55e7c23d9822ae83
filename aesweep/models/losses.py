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
- The disentangling and generative families (beta-TCVAE's tc_mi / tc_tc / tc_dimwise_kl, FactorVAE's factor_tc,
  DIP-VAE's dip_i / dip_ii, InfoVAE's info_mmd, RAE's latent_l2 / decoder_reg, iwae): terms of a per-image
  objective in nats (or that objective's units), mean over the batch, weighted like the KL
  (``variants.PER_IMAGE_TERMS``); vq: a mean over code elements, as the VQ-VAE papers' implementations take it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    model: nn.Module | None = None  # the AutoEncoder, for terms that run its parts again (iwae, decoder_reg, factor_tc)
    dataset_size: int | None = None  # images in the train split (beta-TCVAE's estimate of q(z))


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


def mmd2(x: Tensor, y: Tensor, *, unbiased: bool = True, scales: Sequence[float] = MMD_SCALES,
         kernel: str = "rbf") -> Tensor:
    """Squared MMD between samples x ``(N, D)`` and y ``(M, D)`` under a multi-bandwidth kernel.

    rbf: k(a, b) = mean over s in ``scales`` of exp(-||a - b||^2 / (2 * D * s)); imq (WAE's inverse
    multiquadratic): mean over s of C / (C + ||a - b||^2) with C = 2 * D * s. Bandwidths are relative to 2*D, the
    mean squared distance of two N(0, I_D) draws, so one scale set serves every latent size. ``unbiased``: the
    U-statistic (diagonals of k(x, x) and k(y, y) left out; can be slightly negative, no bias towards
    collapse); else the V-statistic (biased, >= 0, exactly 0 for x == y).
    """
    if kernel not in ("rbf", "imq"):
        raise ValueError(f"mmd: unknown kernel {kernel!r}; known: rbf, imq")
    d = x.shape[-1]
    xy = _at_least_fp32(torch.cat([x, y]))
    sq = torch.cdist(xy, xy).pow(2)
    if kernel == "rbf":
        k = torch.stack([torch.exp(-sq / (2 * d * s)) for s in scales]).mean(0)
    else:
        k = torch.stack([(2 * d * s) / (2 * d * s + sq) for s in scales]).mean(0)
    n = x.shape[0]
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        m = y.shape[0]
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return sxx + syy - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


@LOSS_TERMS.register("mmd")
def mmd(out: AEOutput, batch: Batch, *, mmd_unbiased: bool = True, mmd_kernel: str | None = None,
        **_: Any) -> Tensor:
    """MMD^2 between the batch of codes z and as many fresh draws of N(0, I); see ``mmd2`` (unbiased; kernel
    ``mmd_kernel``, rbf when unset)."""
    z = out.z
    return mmd2(z, torch.randn_like(z), unbiased=mmd_unbiased, kernel=mmd_kernel or "rbf")


@LOSS_TERMS.register("info_mmd")
def info_mmd(out: AEOutput, batch: Batch, *, mmd_kernel: str | None = None, prior: Any = None, **_: Any) -> Tensor:
    """InfoVAE's MMD(q(z), p(z)): the batch of sampled codes against as many prior draws (``mmd2``, unbiased).
    The same estimate as ``mmd``, but weighted in ELBO units (a PER_IMAGE_TERMS term), as InfoVAE's lambda is."""
    z = _at_least_fp32(out.z)
    mean, std = _prior_tensors(prior, z)
    return mmd2(z, mean + std * torch.randn_like(z), kernel=mmd_kernel or "rbf")


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
# Disentangling VAEs: beta-TCVAE, FactorVAE, DIP-VAE


def log_normal(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mu, exp(logvar)) in nats, broadcasting."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mu) ** 2 * torch.exp(-logvar))


def _log_importance_weights(batch_size: int, dataset_size: int, like: Tensor) -> Tensor:
    """beta-TCVAE's stratified-sampling (mss) log weights ``(B, B)``: row i weighs the batch's posteriors when
    estimating q(z_i) as if the other B - 1 images were a stratified sample of the N in the dataset (Chen et al.
    2018, appendix C.2; the authors' ``_log_importance_weight_matrix``)."""
    n, m = dataset_size, batch_size - 1
    strat = (n - m) / (n * m)
    w = torch.full((batch_size, batch_size), 1 / m, dtype=like.dtype, device=like.device)
    w.view(-1)[:: m + 1] = 1 / n
    w.view(-1)[1 :: m + 1] = strat
    w[m - 1, 0] = strat
    return w.log()


def tc_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, *, dataset_size: int | None = None,
                     estimator: str = "mws", prior_mean: Tensor | float = 0.0,
                     prior_std: Tensor | float = 1.0) -> dict[str, Tensor]:
    """The KL term of the ELBO split into index-code mutual information, total correlation and dimension-wise
    KL (Chen et al. 2018, eq. 2), each a batch mean in nats per image.

    z, mu, logvar ``(B, D)``: a sample of q(z|x) and its parameters. q(z) is estimated from the batch, with the
    minibatch weighted (``mws``) or stratified (``mss``) sampling weights, for a dataset of ``dataset_size``
    images (None: the batch is the dataset). mi = E[log q(z|x) - log q(z)], tc = E[log q(z) - sum_d log q(z_d)],
    dimwise_kl = E[sum_d log q(z_d) - log p(z)].
    """
    if estimator not in ("mws", "mss"):
        raise ValueError(f"tc_estimator must be 'mws' or 'mss', got {estimator!r}")
    z, mu, logvar = _at_least_fp32(z), _at_least_fp32(mu), _at_least_fp32(logvar)
    b = z.shape[0]
    n = max(int(dataset_size or b), b)
    log_qz_x = log_normal(z, mu, logvar).sum(1)
    pairs = log_normal(z[:, None, :], mu[None], logvar[None])  # (B, B, D): log q(z_i[d] | x_j)
    if estimator == "mws" or b < 3:
        log_qz = torch.logsumexp(pairs.sum(2), 1) - math.log(b * n)
        log_prod = (torch.logsumexp(pairs, 1) - math.log(b * n)).sum(1)
    else:
        weights = _log_importance_weights(b, n, z)
        log_qz = torch.logsumexp(weights + pairs.sum(2), 1)
        log_prod = torch.logsumexp(weights[:, :, None] + pairs, 1).sum(1)
    prior_mean = torch.as_tensor(prior_mean, dtype=z.dtype, device=z.device)
    prior_std = torch.as_tensor(prior_std, dtype=z.dtype, device=z.device)
    log_pz = log_normal(z, prior_mean, 2 * torch.log(prior_std)).sum(1)
    return {"mi": (log_qz_x - log_qz).mean(), "tc": (log_qz - log_prod).mean(),
            "dimwise_kl": (log_prod - log_pz).mean()}


def _tc_parts(out: AEOutput, batch: Batch, estimator: str | None, prior: Any) -> dict[str, Tensor]:
    """tc_decomposition of this output, computed once for the three terms that share it (``out.cache``)."""
    if out.mu is None or out.logvar is None:
        raise ValueError("tcvae: the model has no gaussian bottleneck (out.mu / out.logvar are None)")
    key = ("tc", estimator, batch.dataset_size)
    if key not in out.cache:
        mean, std = _prior_tensors(prior, _at_least_fp32(out.mu))
        out.cache[key] = tc_decomposition(out.z, out.mu, out.logvar, dataset_size=batch.dataset_size,
                                          estimator=estimator or "mws", prior_mean=mean, prior_std=std)
    return out.cache[key]


@LOSS_TERMS.register("tc_mi")
def tc_mi(out: AEOutput, batch: Batch, *, tc_estimator: str | None = None, prior: Any = None, **_: Any) -> Tensor:
    """beta-TCVAE's index-code mutual information I(x; z), nats per image (``tc_decomposition``)."""
    return _tc_parts(out, batch, tc_estimator, prior)["mi"]


@LOSS_TERMS.register("tc_tc")
def tc_tc(out: AEOutput, batch: Batch, *, tc_estimator: str | None = None, prior: Any = None, **_: Any) -> Tensor:
    """beta-TCVAE's total correlation KL(q(z) || prod_d q(z_d)), nats per image (``tc_decomposition``)."""
    return _tc_parts(out, batch, tc_estimator, prior)["tc"]


@LOSS_TERMS.register("tc_dimwise_kl")
def tc_dimwise_kl(out: AEOutput, batch: Batch, *, tc_estimator: str | None = None, prior: Any = None,
                  **_: Any) -> Tensor:
    """beta-TCVAE's dimension-wise KL sum_d KL(q(z_d) || p(z_d)), nats per image (``tc_decomposition``)."""
    return _tc_parts(out, batch, tc_estimator, prior)["dimwise_kl"]


def permute_dims(z: Tensor) -> Tensor:
    """Each column of z ``(B, D)`` shuffled across the batch independently: samples of prod_d q(z_d) (FactorVAE)."""
    order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return torch.gather(z, 0, order)


@LOSS_TERMS.register("factor_tc")
def factor_tc(out: AEOutput, batch: Batch, **_: Any) -> Tensor:
    """FactorVAE's total-correlation estimate, mean over the batch of log D(z) / (1 - D(z)) = logit_joint -
    logit_product from the discriminator ``batch.model.adversary`` (trained by ``tc_discriminator_loss``)."""
    adversary = getattr(batch.model, "adversary", None)
    if adversary is None:
        raise ValueError("factor_tc: the model has no discriminator (batch.model.adversary)")
    logits = adversary(_at_least_fp32(out.z))
    return (logits[:, 0] - logits[:, 1]).mean()


def tc_discriminator_loss(adversary: nn.Module, z: Tensor) -> Tensor:
    """The discriminator's own loss: cross-entropy of telling codes z ``(B, D)`` (class 0, q(z)) from the same
    codes with each dimension permuted across the batch (class 1, prod_d q(z_d)), mean of the two; z is
    detached, so the encoder is not trained by it. The same batch gives both sides, as disentanglement_lib's
    FactorVAE does (the paper draws a second batch for the permuted side)."""
    z = _at_least_fp32(z.detach())
    joint, product = adversary(z), adversary(permute_dims(z))
    zeros = torch.zeros(len(z), dtype=torch.long, device=z.device)
    return 0.5 * (F.cross_entropy(joint, zeros) + F.cross_entropy(product, 1 - zeros))


# The adversaries' own losses, by the name a variant gives its adversary (variants.VariantPreset.adversary).
ADVERSARY_LOSSES = {"tc_discriminator": tc_discriminator_loss}


def _dip_penalty(cov: Tensor, lambda_od: float, lambda_d: float) -> Tensor:
    diagonal = torch.diagonal(cov)
    off = cov - torch.diag(diagonal)
    return lambda_od * off.pow(2).sum() + lambda_d * (diagonal - 1).pow(2).sum()


def _covariance(x: Tensor) -> Tensor:
    """Covariance ``(D, D)`` of the rows of x ``(B, D)``, normalised by B (disentanglement_lib's)."""
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / x.shape[0]


@LOSS_TERMS.register("dip_i")
def dip_i(out: AEOutput, batch: Batch, *, lambda_od: float = 10.0, lambda_d: float = 100.0, **_: Any) -> Tensor:
    """DIP-VAE-I: lambda_od * sum_{i != j} Cov[mu]_ij^2 + lambda_d * sum_i (Cov[mu]_ii - 1)^2 over the batch."""
    if out.mu is None:
        raise ValueError("dip_i: the model has no gaussian bottleneck (out.mu is None)")
    return _dip_penalty(_covariance(_at_least_fp32(out.mu)), lambda_od, lambda_d)


@LOSS_TERMS.register("dip_ii")
def dip_ii(out: AEOutput, batch: Batch, *, lambda_od: float = 10.0, lambda_d: float = 10.0, **_: Any) -> Tensor:
    """DIP-VAE-II: the same penalty on Cov_q[z] = E_x[diag exp(logvar)] + Cov[mu]."""
    if out.mu is None or out.logvar is None:
        raise ValueError("dip_ii: the model has no gaussian bottleneck (out.mu / out.logvar are None)")
    mu, logvar = _at_least_fp32(out.mu), _at_least_fp32(out.logvar)
    cov = _covariance(mu) + torch.diag(logvar.exp().mean(0))
    return _dip_penalty(cov, lambda_od, lambda_d)


# ----------------------------------------------------------------------------------------------------
# VQ-VAE, RAE, IWAE


@LOSS_TERMS.register("vq")
def vq(out: AEOutput, batch: Batch, *, commitment: float = 0.25, ema_decay: float | None = None,
       **_: Any) -> Tensor:
    """VQ-VAE's codebook + commitment * commitment loss, each a mean over code elements: ||sg[z_e] - e||^2
    moves the codes (left out when an EMA updates them, ``ema_decay``), ||z_e - sg[e]||^2 the encoder."""
    if out.vq is None:
        raise ValueError("vq: the model has no vector-quantised bottleneck (out.vq is None)")
    commit = F.mse_loss(_at_least_fp32(out.vq.z_e), _at_least_fp32(out.vq.z_q).detach())
    if ema_decay:
        return commitment * commit
    return F.mse_loss(_at_least_fp32(out.vq.z_q), _at_least_fp32(out.vq.z_e).detach()) + commitment * commit


@LOSS_TERMS.register("latent_l2")
def latent_l2(out: AEOutput, batch: Batch, **_: Any) -> Tensor:
    """RAE's ||z||^2 / 2, summed over latent dims, mean over the batch."""
    return 0.5 * _at_least_fp32(out.z).pow(2).sum(-1).mean()


@LOSS_TERMS.register("decoder_reg")
def decoder_reg(out: AEOutput, batch: Batch, *, decoder_reg: str | None = None, **_: Any) -> Tensor:
    """RAE's decoder regulariser. l2: the sum of the decoder's squared weights (RAE-L2). gp: ||J||_F^2 of the
    decoder at z, the squared Frobenius norm of d x_hat / d z per image, mean over the batch, estimated by one
    random projection (E_v ||J^T v||^2 = ||J||_F^2 for v ~ N(0, I); RAE-GP). gp needs the graph: where none
    is recorded (evaluation) it is 0."""
    kind = decoder_reg or "l2"
    if batch.model is None:
        raise ValueError("decoder_reg: needs the model (batch.model)")
    if kind == "l2":
        weights = [p for name, p in batch.model.backbone.decoder.named_parameters() if name.endswith("weight")]
        return torch.stack([_at_least_fp32(w).pow(2).sum() for w in weights]).sum()
    if kind != "gp":
        raise ValueError(f"decoder_reg: unknown regulariser {kind!r}; known: l2, gp")
    if not (torch.is_grad_enabled() and out.z.requires_grad):
        return out.x_hat.new_zeros((), dtype=torch.float32)
    v = torch.randn_like(out.x_hat)
    (grad,) = torch.autograd.grad((out.x_hat * v).sum(), out.z, create_graph=True)
    return _at_least_fp32(grad).pow(2).sum(-1).mean()


def log_likelihood(x_hat: Tensor, target: Tensor, recon: str) -> Tensor:
    """log p(target | x_hat) summed over pixels ``(..., C, H, W) -> (...)``, in nats: Bernoulli for bce, a
    Gaussian of variance 1/2 for mse (the decoder the elbo kl_scale implies), a Laplace of scale 1 for mae."""
    x_hat, target = _at_least_fp32(x_hat), _at_least_fp32(target).expand_as(x_hat)
    if recon == "bce":
        per_pixel = -F.binary_cross_entropy(x_hat, target, reduction="none")
    elif recon == "mse":
        per_pixel = -(x_hat - target).pow(2) - 0.5 * math.log(math.pi)
    elif recon == "mae":
        per_pixel = -(x_hat - target).abs() - math.log(2.0)
    else:
        raise ValueError(f"iwae: no likelihood for recon {recon!r}; use mse, bce or mae")
    return per_pixel.flatten(-3).sum(-1)


@LOSS_TERMS.register("iwae")
def iwae(out: AEOutput, batch: Batch, *, iwae_samples: int = 5, recon: str = "mse", prior: Any = None,
         **_: Any) -> Tensor:
    """The negative IWAE bound (Burda et al. 2016), nats per image, mean over the batch:
    -log (1/k) sum_k p(x | z_k) p(z_k) / q(z_k | x), z_k ~ q(z | x) reparameterised, k = ``iwae_samples``
    decoded by ``batch.model.decode``; k = 1 is the negative ELBO. The likelihood is ``log_likelihood``'s."""
    if out.mu is None or out.logvar is None or batch.model is None:
        raise ValueError("iwae: needs a gaussian bottleneck and the model (out.mu, out.logvar, batch.model)")
    mu, logvar = _at_least_fp32(out.mu), _at_least_fp32(out.logvar)
    k = int(iwae_samples)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape), dtype=mu.dtype, device=mu.device)
    x_hat = batch.model.decode(z.flatten(0, 1)).view(k, *batch.target.shape)
    mean, std = _prior_tensors(prior, mu)
    log_w = (log_likelihood(x_hat, batch.target, recon) + log_normal(z, mean, 2 * torch.log(std)).sum(-1)
             - log_normal(z, mu, logvar).sum(-1))
    return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()


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
