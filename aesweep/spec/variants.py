"""Autoencoder variants as data: each preset is a row of loss terms, knobs and input handling.

A variant is not a class. It names the loss terms it adds (each weighted by a number or by one of its knobs),
the knobs it owns with their defaults, the bottleneck it needs and how its input is prepared. Variants compose
with ``+``: ``denoising+vae`` is the union of both rows (a denoising beta-VAE), with no new code.

The reconstruction term is shared by every variant: its weight is the objective's ``recon_weight``, which
defaults to 1 when any composed part reconstructs (ae, sparse, denoising, vae, mmd) and to 0 otherwise
(contrastive, supcon, classifier). ``contrastive+denoising`` is therefore the hybrid objective of the
paradigms study: NT-Xent on two augmented views plus a denoising reconstruction.

This module imports nothing heavy: the spec validates variant names and knobs against this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aesweep.registry import VARIANTS, UnknownNameError

Bottleneck = Literal["deterministic", "gaussian", "vector_quantized"]
Head = Literal["projection", "classifier"]

# Objective knobs a variant may own. Their types live in spec.ObjectiveConfig.
KNOBS = ("sparsity", "noise_sigma", "beta", "prior", "latent_noise", "temperature", "augment_pad", "augment_jitter",
         "augment_scale", "softmax_mae_weight",
         # the disentangling and generative families (issue 30): beta-TCVAE, FactorVAE, DIP-VAE, InfoVAE / WAE,
         # VQ-VAE, RAE, IWAE; spec.ObjectiveConfig says what each means
         "alpha", "gamma", "tc_estimator", "discriminator", "lambda_od", "lambda_d", "mmd_kernel", "mmd_weight",
         "codebook_size", "code_dim", "commitment", "ema_decay", "decoder_reg", "decoder_reg_weight",
         "iwae_samples")
# The two views' augmentation (data.two_views): crop padding in px (None: min(H, W) // 8), contrast / brightness
# jitter and the resized crop's smallest area (None: none). The studies that use two views do not name their
# augmentations, so they are knobs.
TWO_VIEW_KNOBS = {"augment_pad": None, "augment_jitter": 0.2, "augment_scale": None}


@dataclass(frozen=True)
class VariantPreset:
    """One row of the variant table.

    terms: loss term name -> weight, a number or the name of a knob whose value is the weight.
    knobs: the knobs this variant owns, with their defaults (None where the spec type gives the default).
    """

    name: str
    doc: str
    terms: dict[str, float | str] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    bottleneck: Bottleneck = "deterministic"
    reconstructs: bool = True  # the recon term defaults to weight 1 (else 0, opt-in by recon_weight)
    corrupts_input: bool = False  # x + N(0, noise_sigma^2), clipped to [0, 1]; the target stays clean
    two_views: bool = False  # the batch is two augmented views of each image
    heads: frozenset[Head] = frozenset()
    needs_labels: bool = False
    fit: str | None = None  # a baseline (baselines.BASELINES) fitted instead of trained; composes with nothing
    # A second network trained against the first by its own optimiser (train.py): FactorVAE's discriminator.
    adversary: str | None = None
    required: frozenset[str] = frozenset()  # knobs with no default: the spec must set them (spec.checks)


PRESETS = [
    VariantPreset("ae", "plain autoencoder: reconstruction only"),
    VariantPreset("sparse", "recon + sparsity * L1(z)", terms={"l1_latent": "sparsity"}, knobs={"sparsity": 1e-4}),
    VariantPreset(
        "denoising", "recon of the clean image from x + N(0, sigma^2)", knobs={"noise_sigma": 0.3},
        corrupts_input=True,
    ),
    VariantPreset(
        "vae", "beta-VAE: gaussian bottleneck, recon + beta * KL(q(z|x) || prior)", terms={"kl": "beta"},
        knobs={"beta": 1.0, "prior": None}, bottleneck="gaussian",
    ),
    VariantPreset(
        "mmd", "recon + beta * MMD(z, N(0, I)), optional latent noise", terms={"mmd": "beta"},
        knobs={"beta": 1.0, "latent_noise": 0.0},
    ),
    VariantPreset(
        "contrastive", "SimCLR NT-Xent on two augmented views (projection head)", terms={"nt_xent": 1.0},
        knobs={"temperature": 0.5, **TWO_VIEW_KNOBS}, reconstructs=False, two_views=True, heads=frozenset({"projection"}),
    ),
    VariantPreset(
        "supcon", "supervised contrastive loss on two augmented views (projection head)", terms={"supcon": 1.0},
        knobs={"temperature": 0.1, **TWO_VIEW_KNOBS}, reconstructs=False, two_views=True, heads=frozenset({"projection"}),
        needs_labels=True,
    ),
    VariantPreset(
        "classifier", "classification-guided encoder: cross-entropy through a classifier head "
        "(+ softmax_mae_weight * MAE(softmax, one-hot), 004's auxiliary term)",
        terms={"cross_entropy": 1.0, "softmax_mae": "softmax_mae_weight"}, knobs={"softmax_mae_weight": 0.0},
        reconstructs=False, heads=frozenset({"classifier"}), needs_labels=True,
    ),
    # The disentangling VAEs. Their regularisers are nats per image like the KL (PER_IMAGE_TERMS), so kl_scale
    # puts them on the reconstruction's scale as it does beta.
    VariantPreset(
        "tcvae", "beta-TCVAE (Chen et al. 2018): recon + alpha * MI + beta * TC + gamma * dimension-wise KL, the "
        "KL decomposed by a minibatch estimate of q(z) (tc_estimator mws | mss)",
        terms={"tc_mi": "alpha", "tc_tc": "beta", "tc_dimwise_kl": "gamma"},
        knobs={"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "tc_estimator": "mws", "prior": None},
        bottleneck="gaussian",
    ),
    VariantPreset(
        "factorvae", "FactorVAE (Kim & Mnih 2018): ELBO + gamma * TC, the TC estimated by a discriminator on z "
        "trained against the encoder by its own optimiser (objective.discriminator)",
        terms={"kl": 1.0, "factor_tc": "gamma"}, knobs={"gamma": 10.0, "discriminator": None},
        bottleneck="gaussian", adversary="tc_discriminator", required=frozenset({"discriminator"}),
    ),
    VariantPreset(
        "dipvae1", "DIP-VAE-I (Kumar et al. 2018): ELBO + lambda_od * off-diagonal^2 + lambda_d * (diagonal - 1)^2 "
        "of Cov[mu(x)]", terms={"kl": "beta", "dip_i": 1.0},
        knobs={"beta": 1.0, "lambda_od": 10.0, "lambda_d": 100.0}, bottleneck="gaussian",
    ),
    VariantPreset(
        "dipvae2", "DIP-VAE-II (Kumar et al. 2018): the same penalty on Cov_q[z] = E[diag sigma^2] + Cov[mu]",
        terms={"kl": "beta", "dip_ii": 1.0},
        knobs={"beta": 1.0, "lambda_od": 10.0, "lambda_d": 10.0}, bottleneck="gaussian",
    ),
    VariantPreset(
        "infovae", "InfoVAE / MMD-VAE (Zhao et al. 2019): recon + beta * KL + mmd_weight * MMD(q(z), p(z)); the "
        "paper's (1 - alpha) is beta, its (alpha + lambda - 1) is mmd_weight, both in ELBO units",
        terms={"kl": "beta", "info_mmd": "mmd_weight"},
        knobs={"beta": 1.0, "mmd_weight": 1000.0, "mmd_kernel": "rbf", "prior": None}, bottleneck="gaussian",
    ),
    VariantPreset(
        "wae", "WAE-MMD (Tolstikhin et al. 2018): deterministic encoder, recon + beta * MMD(z, N(0, I)) with the "
        "inverse multiquadratic kernel (mmd_kernel)", terms={"mmd": "beta"},
        knobs={"beta": 10.0, "mmd_kernel": "imq"},
    ),
    VariantPreset(
        "vqvae", "VQ-VAE (van den Oord et al. 2017): z split into vectors of code_dim, each snapped to the nearest "
        "of codebook_size codes (straight-through gradient); + codebook and commitment losses, or EMA codebook "
        "updates (ema_decay)", terms={"vq": 1.0},
        knobs={"codebook_size": 512, "code_dim": None, "commitment": 0.25, "ema_decay": None},
        bottleneck="vector_quantized",
    ),
    VariantPreset(
        "rae", "RAE (Ghosh et al. 2020): deterministic, recon + beta * ||z||^2 / 2 + decoder_reg_weight * the "
        "decoder's regulariser (decoder_reg l2 | gp); sampled through an ex-post density on z",
        terms={"latent_l2": "beta", "decoder_reg": "decoder_reg_weight"},
        knobs={"beta": 1e-4, "decoder_reg": "l2", "decoder_reg_weight": 1e-7},
    ),
    VariantPreset(
        "iwae", "IWAE (Burda et al. 2016): the k-sample importance-weighted bound (iwae_samples) in place of the "
        "ELBO; loss/iwae is the negative bound, nats per image", terms={"iwae": 1.0},
        knobs={"iwae_samples": 5, "prior": None}, bottleneck="gaussian", reconstructs=False,
    ),
    # Baselines: fitted on the train split instead of trained (baselines.py), measured like every trial.
    VariantPreset("pca", "baseline: PCA with latent_dim components, fitted (not trained)", fit="pca"),
    VariantPreset("raw_pixels", "baseline: the raw pixels as the code (probes, clustering; no reconstruction)",
                  reconstructs=False, fit="raw_pixels"),
]
for _preset in PRESETS:
    VARIANTS.add(_preset.name, _preset, _preset.doc)


def parts(variant: str) -> list[VariantPreset]:
    """The presets a (possibly composed, ``a+b``) variant name is made of; raises UnknownNameError."""
    names = [p.strip() for p in variant.split("+")]
    if not all(names):
        raise UnknownNameError(f"malformed variant {variant!r}; compose known variants with '+'")
    presets = [VARIANTS.get(n) for n in names]
    if len(presets) > 1 and (fitted := [p.name for p in presets if p.fit]):
        raise UnknownNameError(f"variant {variant!r}: {fitted[0]} is a baseline (fitted, not trained) and does not "
                               f"compose with '+'")
    if len(needed := {p.bottleneck for p in presets} - {"deterministic"}) > 1:
        raise UnknownNameError(f"variant {variant!r}: its parts need different bottlenecks ({', '.join(sorted(needed))})")
    return presets


def knobs_of(variant: str) -> dict[str, Any]:
    """Knob -> default for a (possibly composed) variant; the first part's default wins on a shared knob."""
    knobs: dict[str, Any] = {}
    for preset in parts(variant):
        for knob, default in preset.knobs.items():
            knobs.setdefault(knob, default)
    return knobs


def default_recon_weight(variant: str) -> float:
    return 1.0 if any(p.reconstructs for p in parts(variant)) else 0.0


@dataclass(frozen=True)
class Objective:
    """A resolved objective: what the training loop needs to know, with every weight a number."""

    variant: str
    terms: dict[str, float]  # loss term -> weight (recon included when its weight is > 0)
    bottleneck: Bottleneck
    noise_sigma: float  # input corruption; 0 = none
    two_views: bool
    heads: frozenset[Head]
    needs_labels: bool
    knobs: dict[str, Any]
    fit: str | None = None  # the baseline fitted instead of training (baselines.BASELINES), else None
    adversary: str | None = None  # the adversary a part trains against its model (train.py), else None


# Terms that are sums over latent dimensions per image (nats for KL), weighed against a reconstruction that is a
# mean over pixels. ``kl_scale`` names how their weight beta is normalised (spec.ObjectiveConfig.kl_scale):
#   elbo         beta / (C*H*W): loss * C*H*W = sum over pixels of the reconstruction + beta * KL, the textbook
#                (beta-)ELBO at any image size; with MSE it is a Gaussian decoder of variance 1/2 (a decoder of
#                variance s^2 is beta = 2 s^2). The default, and study 003's scaling.
#   latent_mean  beta / latent_dim: mean over pixels of the reconstruction + beta * mean over latent dims of the
#                KL (``torch.mean`` / Keras ``K.mean`` over every KL element): study 000's scaling (docs/studies.md).
#                The KL's pull weakens as the code grows.
#   unscaled     beta: mean over pixels of the reconstruction + beta * KL summed over latent dims
#                (``F.mse_loss`` left at its mean + a summed KL): beta * C*H*W in ELBO units.
PER_IMAGE_TERMS = frozenset({"kl", "tc_mi", "tc_tc", "tc_dimwise_kl", "factor_tc", "dip_i", "dip_ii", "info_mmd",
                             "latent_l2", "decoder_reg", "iwae"})
KL_SCALES = ("elbo", "latent_mean", "unscaled")


def kl_divisor(kl_scale: str, elements_per_image: int | None, latent_dim: int | None) -> float:
    """What the weight of a PER_IMAGE_TERMS term is divided by under ``kl_scale`` (see above).

    elbo needs ``elements_per_image`` (without it, 1: weights as given); latent_mean needs ``latent_dim``.
    """
    if kl_scale == "elbo":
        return float(elements_per_image or 1)
    if kl_scale == "latent_mean":
        if not latent_dim:
            raise ValueError("kl_scale latent_mean needs the latent size")
        return float(latent_dim)
    if kl_scale == "unscaled":
        return 1.0
    raise ValueError(f"unknown kl_scale {kl_scale!r}; known: {', '.join(KL_SCALES)}")


def _bottleneck_of(variant: str, presets: list[VariantPreset]) -> Bottleneck:
    """The one bottleneck a composed variant's parts need (``parts`` refused two different ones); deterministic
    parts take any other."""
    needed = {p.bottleneck for p in presets} - {"deterministic"}
    return needed.pop() if needed else "deterministic"


def compose(variant: str, knob_values: dict[str, Any], recon_weight: float | None = None,
            elements_per_image: int | None = None, *, kl_scale: str = "elbo",
            latent_dim: int | None = None) -> Objective:
    """Resolve a variant name and its knob values into weighted terms.

    knob_values: values for the variant's knobs; a missing or None one takes the preset default.
    elements_per_image: C*H*W of the images; with ``kl_scale`` "elbo" (default) the weights of PER_IMAGE_TERMS
      are divided by it (see above). Without it weights are taken as given (relative to the per-element
      reconstruction). latent_dim: the code size, which ``kl_scale`` "latent_mean" divides by.
    """
    presets = parts(variant)
    knobs = {k: (knob_values.get(k) if knob_values.get(k) is not None else d) for k, d in knobs_of(variant).items()}
    weight = default_recon_weight(variant) if recon_weight is None else float(recon_weight)
    terms: dict[str, float] = {"recon": weight} if weight > 0 else {}
    for preset in presets:
        for term, w in preset.terms.items():
            terms[term] = float(knobs[w]) if isinstance(w, str) else float(w)
            if term in PER_IMAGE_TERMS:
                terms[term] /= kl_divisor(kl_scale, elements_per_image, latent_dim)
    return Objective(
        variant=variant,
        terms=terms,
        bottleneck=_bottleneck_of(variant, presets),
        noise_sigma=float(knobs.get("noise_sigma") or 0.0) if any(p.corrupts_input for p in presets) else 0.0,
        two_views=any(p.two_views for p in presets),
        heads=frozenset().union(*(p.heads for p in presets)),
        needs_labels=any(p.needs_labels for p in presets),
        knobs=knobs,
        fit=presets[0].fit,
        adversary=next((p.adversary for p in presets if p.adversary), None),
    )
