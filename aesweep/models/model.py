"""One AutoEncoder for every variant: encoder -> bottleneck -> decoder, plus optional heads.

Variants differ in their loss terms (losses.py) and in two structural switches that variants.Objective names:
the bottleneck (deterministic or gaussian) and the heads (projection, classifier). There is no subclass per
variant; ``forward`` always returns one ``AEOutput`` and the loss terms read what they need from it.

Shapes: x ``(B, C, H, W)`` in [0, 1]; feature ``(B, feature_dim)``; z, mu, logvar ``(B, latent_dim)``;
projection ``(B, projection_dim)``; logits ``(B, num_classes)``.

Decisions:
- The latent z is the representation that probes read, so both heads sit on z (not on the pre-bottleneck
  feature h as in SimCLR's g(h)): a contrastive or classification objective then shapes z itself. The
  pre-bottleneck feature h (the conv encoder's flattened last map, the ResNet's pooled one) is still exposed (``AEOutput.feature``, ``embed(with_feature=True)``).
- Gaussian bottleneck: one Linear gives (mu, logvar); z = mu + exp(logvar / 2) * eps in training, mu in eval.
- Latent noise (the mmd variant's decoder regulariser): in training the decoder sees z + N(0, latent_noise^2);
  ``AEOutput.z`` stays the clean code so that regularisers (MMD, L1) act on what the encoder produced.
- A skip-connection backbone's encoder maps go from ``encode`` to ``decode`` (``Code.maps``) and nowhere else:
  ``embed`` and the heads read z only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aesweep.models.nets import build_backbone
from aesweep.spec.backbones import SETTINGS
from aesweep.spec.trial import INIT_SCHEMES

if TYPE_CHECKING:
    from aesweep.spec.trial import ModelConfig
    from aesweep.spec.variants import Objective

HEADS = ("projection", "classifier")


@dataclass
class AEOutput:
    """Everything one forward pass produces; None where the model has no such part."""

    x_hat: Tensor  # (B, C, H, W) in [0, 1]
    z: Tensor  # (B, latent_dim): the code (a sample in training for a gaussian bottleneck, mu in eval)
    feature: Tensor  # (B, feature_dim): the encoder's pre-bottleneck feature
    mu: Tensor | None = None  # (B, latent_dim), gaussian bottleneck only
    logvar: Tensor | None = None  # (B, latent_dim), gaussian bottleneck only: log of the posterior variance
    projection: Tensor | None = None  # (B, projection_dim), projection head only (not normalised)
    logits: Tensor | None = None  # (B, num_classes), classifier head only
    vq: Quantized | None = None  # vector-quantised bottleneck only
    # Values several loss terms share, computed once per output (losses._tc_parts); not part of the result.
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)


class Quantized(NamedTuple):
    """A vector-quantised bottleneck's parts, G = latent_dim / code_dim vectors per image.

    z_e ``(B, G, code_dim)``: the encoder's vectors; z_q ``(B, G, code_dim)``: their nearest codes (gradients
    reach the codebook through it); codes ``(B, G)`` int64: the codes' indices."""

    z_e: Tensor
    z_q: Tensor
    codes: Tensor


class Code(NamedTuple):
    """What ``AutoEncoder.encode`` returns."""

    z: Tensor
    mu: Tensor | None
    logvar: Tensor | None
    feature: Tensor
    maps: tuple[Tensor | None, ...] = ()  # skip-connection backbones: encoder maps for the decoder, else ()
    vq: Quantized | None = None


class DeterministicBottleneck(nn.Module):
    """feature -> z by one Linear (no activation on the latent)."""

    def __init__(self, feature_dim: int, latent_dim: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, None]:
        return self.linear(h), None, None, None


class GaussianBottleneck(nn.Module):
    """feature -> (mu, logvar) by one Linear; reparameterised sample z in training, z = mu in eval."""

    def __init__(self, feature_dim: int, latent_dim: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, None]:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        # Branch on the module mode, never on data: evaluation and probes see the posterior mean.
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return z, mu, logvar, None


class VectorQuantizedBottleneck(nn.Module):
    """feature -> z_e by one Linear, cut into latent_dim / code_dim vectors, each replaced by its nearest of
    ``codebook_size`` codes; z = z_e + sg[z_q - z_e] (the straight-through estimator: the decoder sees the codes,
    the encoder gets the decoder's gradient). With ``ema_decay`` the codebook is an exponential moving average
    of the vectors assigned to each code (van den Oord et al. 2017, appendix A.1; Laplace-smoothed counts), updated
    in training; without it the codebook is a parameter learnt by the vq loss term."""

    def __init__(self, feature_dim: int, latent_dim: int, codebook_size: int = 512, code_dim: int | None = None,
                 ema_decay: float | None = None):
        super().__init__()
        code_dim = code_dim or latent_dim
        if latent_dim % code_dim:
            raise ValueError(f"latent_dim {latent_dim} is not a multiple of code_dim {code_dim}")
        self.code_dim, self.ema_decay = code_dim, ema_decay
        self.linear = nn.Linear(feature_dim, latent_dim)
        codebook = torch.empty(codebook_size, code_dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        if ema_decay:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_count", torch.zeros(codebook_size))
            self.register_buffer("ema_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)

    def forward(self, h: Tensor) -> tuple[Tensor, None, None, Quantized]:
        z_e = self.linear(h)
        vectors = z_e.view(len(z_e), -1, self.code_dim)
        flat = vectors.detach().reshape(-1, self.code_dim).float()
        codebook = self.codebook.float()
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)[None]
        codes = distances.argmin(1)
        if self.training and self.ema_decay:
            self._ema_update(flat, codes)
        z_q = F.embedding(codes, self.codebook).view_as(vectors).to(vectors.dtype)
        z = vectors + (z_q - vectors).detach()
        return z.reshape_as(z_e), None, None, Quantized(vectors, z_q, codes.view(vectors.shape[:2]))

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, codes: Tensor) -> None:
        decay, size = float(self.ema_decay), self.codebook.shape[0]
        onehot = F.one_hot(codes, size).float()
        self.ema_count.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(onehot.T @ flat, alpha=1 - decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + size * 1e-5) * n  # Laplace smoothing: no division by 0
        self.codebook.copy_(self.ema_sum / count[:, None])


BOTTLENECKS: dict[str, type[nn.Module]] = {
    "deterministic": DeterministicBottleneck,
    "gaussian": GaussianBottleneck,
    "vector_quantized": VectorQuantizedBottleneck,
}


def _adversary_widths(objective: Objective) -> list[int] | None:
    """The discriminator's hidden widths for an objective with an adversary (FactorVAE), else None."""
    if objective.adversary is None:
        return None
    settings = objective.knobs.get("discriminator")
    if settings is None:
        raise ValueError(f"variant {objective.variant}: objective.discriminator is not set (its widths, lr, betas)")
    widths = settings["widths"] if isinstance(settings, dict) else settings.widths
    return list(widths)


def discriminator(latent_dim: int, widths: Iterable[int]) -> nn.Sequential:
    """FactorVAE's discriminator on z: Linear + LeakyReLU(0.2) per hidden width, then 2 logits (joint, product)."""
    layers: list[nn.Module] = []
    prev = latent_dim
    for w in widths:
        layers += [nn.Linear(prev, w), nn.LeakyReLU(0.2, inplace=True)]
        prev = w
    layers.append(nn.Linear(prev, 2))
    return nn.Sequential(*layers)


def projection_head(latent_dim: int, projection_dim: int) -> nn.Sequential:
    """SimCLR's g(.): Linear -> ReLU -> Linear, hidden width max(latent_dim, projection_dim)."""
    hidden = max(latent_dim, projection_dim)
    return nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, projection_dim)
    )


def classifier_head(latent_dim: int, num_classes: int, widths: Iterable[int] = (), dropout: float = 0.0,
                    batchnorm: bool = False) -> nn.Module:
    """The classifier head on z: one Linear without hidden ``widths``; else Linear [+ BatchNorm1d] + ReLU
    [+ Dropout] per hidden width, then Linear to the classes.

    The paradigms studies' heads: 001's "two-layer MLP classifier [...] from 128 to 64 units with a ReLU,
    followed by a final layer projecting to 10 classes" (with "dropout layers in classifiers") is
    ``widths=[64]``; 004's "three fully connected layers with batch normalization, ReLU activations, and dropout"
    is two hidden widths with ``batchnorm=True``.
    """
    widths = list(widths)
    if not widths:
        return nn.Linear(latent_dim, num_classes)
    layers: list[nn.Module] = []
    prev = latent_dim
    for w in widths:
        layers.append(nn.Linear(prev, w))
        if batchnorm:
            layers.append(nn.BatchNorm1d(w))
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = w
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


# torch: the layers' own reset_parameters (kaiming_uniform with a = sqrt(5): weights and biases U(+-1/sqrt(fan_in)),
# variance 1 / (3 fan_in)). lecun_normal: JAX/Flax's default for nn.Dense and nn.Conv(Transpose), a normal
# truncated at 2 std whose variance after truncation is 1 / fan_in, and zero biases (INIT_SCHEMES).

# The std of a standard normal truncated to [-2, 2] (scipy.stats.truncnorm(-2, 2).std()), which Flax divides out.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def initialise(module: nn.Module, scheme: str) -> None:
    """Re-initialise every Linear, Conv and ConvTranspose weight of ``module`` in place (``scheme`` in
    ``INIT_SCHEMES``; BatchNorm keeps its ones and zeros). fan_in is Flax's: the input features times the kernel's
    receptive field, for a transposed conv too (its in_channels, where PyTorch's own fan_in counts the outputs)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if scheme == "torch":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fan_in = layer.in_features
        elif isinstance(layer, nn.modules.conv._ConvNd):
            receptive = layer.weight[0, 0].numel()
            fan_in = (layer.in_channels if layer.transposed else layer.in_channels // layer.groups) * receptive
        else:
            continue
        std = (1.0 / fan_in) ** 0.5 / _TRUNCATED_NORMAL_STD
        with torch.no_grad():
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
            if layer.bias is not None:
                layer.bias.zero_()


class AutoEncoder(nn.Module):
    """Encoder -> bottleneck -> decoder with optional projection / classifier heads on z.

    backbone_name: a name registered in ``BACKBONES`` (conv, mlp, resnet, ...).
    in_shape: ``(C, H, W)`` of one image.
    bottleneck: "deterministic" | "gaussian".
    heads: any of {"projection", "classifier"}.
    latent_noise: std of the Gaussian noise added to z before decoding, training only (0 = none).
    settings: backbone settings (``backbones.SETTINGS``: widths, channels, dropout, ...); None values = defaults.
    head_widths, head_dropout, head_batchnorm: the classifier head's hidden layers (``classifier_head``).
    init: the initial weights, ``initialise``'s scheme.
    quantizer: the vector-quantised bottleneck's codebook_size, code_dim, ema_decay (``VectorQuantizedBottleneck``).
    adversary_widths: hidden widths of a discriminator on z (``discriminator``: FactorVAE's), None for none. It is
      ``self.adversary``, outside the encoder and decoder: the training loop gives it its own optimiser.
    """

    def __init__(
        self,
        backbone_name: str,
        in_shape: tuple[int, int, int],
        latent_dim: int,
        *,
        width: float = 1.0,
        depth: int | None = None,
        bottleneck: str = "deterministic",
        heads: Iterable[str] = frozenset(),
        num_classes: int = 10,
        projection_dim: int = 128,
        latent_noise: float = 0.0,
        settings: dict | None = None,
        head_widths: Iterable[int] = (),
        head_dropout: float = 0.0,
        head_batchnorm: bool = False,
        init: str = "torch",
        quantizer: dict[str, Any] | None = None,
        adversary_widths: Iterable[int] | None = None,
    ):
        super().__init__()
        heads = frozenset(heads)
        if bottleneck not in BOTTLENECKS:
            raise ValueError(f"unknown bottleneck {bottleneck!r}; known: {', '.join(sorted(BOTTLENECKS))}")
        if unknown := heads - set(HEADS):
            raise ValueError(f"unknown head(s) {sorted(unknown)}; known: {', '.join(HEADS)}")
        if latent_noise < 0:
            raise ValueError(f"latent_noise must be >= 0, got {latent_noise}")
        self.in_shape = tuple(in_shape)
        self.latent_dim = int(latent_dim)
        self.bottleneck_kind = bottleneck
        self.latent_noise = float(latent_noise)
        self.backbone = build_backbone(backbone_name, self.in_shape, self.latent_dim, width, depth,
                                       **(settings or {}))
        self.feature_dim = self.backbone.feature_dim
        self.bottleneck = BOTTLENECKS[bottleneck](self.feature_dim, self.latent_dim,
                                                  **((quantizer or {}) if bottleneck == "vector_quantized" else {}))
        self.projection = projection_head(self.latent_dim, projection_dim) if "projection" in heads else None
        self.classifier = (classifier_head(self.latent_dim, num_classes, head_widths, head_dropout, head_batchnorm)
                           if "classifier" in heads else None)
        self.adversary = discriminator(self.latent_dim, adversary_widths) if adversary_widths is not None else None
        initialise(self, init)

    @classmethod
    def from_config(
        cls,
        model_cfg: ModelConfig,
        objective: Objective,
        in_shape: tuple[int, int, int],
        num_classes: int = 10,
    ) -> AutoEncoder:
        """Build from a trial's ``ModelConfig`` and its resolved ``variants.Objective``."""
        return cls(
            model_cfg.backbone,
            in_shape,
            model_cfg.latent_dim,
            width=model_cfg.width,
            depth=model_cfg.depth,
            bottleneck=objective.bottleneck,
            heads=objective.heads,
            num_classes=num_classes,
            projection_dim=model_cfg.projection_dim,
            latent_noise=float(objective.knobs.get("latent_noise") or 0.0),
            settings={name: getattr(model_cfg, name) for name in SETTINGS},
            head_widths=model_cfg.head_widths,
            head_dropout=model_cfg.head_dropout,
            head_batchnorm=model_cfg.head_batchnorm,
            init=model_cfg.init,
            quantizer={k: objective.knobs.get(k) for k in ("codebook_size", "code_dim", "ema_decay")
                       if objective.knobs.get(k) is not None},
            adversary_widths=_adversary_widths(objective),
        )

    @property
    def gaussian(self) -> bool:
        return self.bottleneck_kind == "gaussian"

    def encode(self, x: Tensor) -> Code:
        """x ``(B, C, H, W)`` -> Code(z, mu, logvar, feature, maps); mu and logvar are None unless gaussian,
        maps is () unless the backbone has skip connections."""
        feature, maps = self.backbone.encode(x)
        z, mu, logvar, quantized = self.bottleneck(feature)
        return Code(z, mu, logvar, feature, maps, quantized)

    def decode(self, z: Tensor, maps: tuple[Tensor | None, ...] = ()) -> Tensor:
        """z ``(B, latent_dim)`` -> x_hat ``(B, C, H, W)`` in [0, 1]. ``maps``: a skip backbone's encoder maps
        (``Code.maps``); without them a skip decoder sees zero maps (see ``nets.SkipConvDecoder``)."""
        return self.backbone.decode(z, maps)

    def classify(self, x: Tensor) -> Tensor:
        """The classifier head's logits ``(B, num_classes)`` for images x (no decoder pass)."""
        if self.classifier is None:
            raise ValueError("classify needs a classifier head; this model has none")
        return self.classifier(self.encode(x).z)

    def parameter_counts(self) -> dict[str, float]:
        """``model/params`` (every parameter), ``model/params/encoder`` (backbone encoder + bottleneck: all that
        maps x to z) and ``model/params/decoder`` (z to x_hat); heads count in the total only."""
        def count(*modules: nn.Module) -> float:
            return float(sum(p.numel() for m in modules for p in m.parameters()))

        return {"model/params": count(self), "model/params/encoder": count(self.backbone.encoder, self.bottleneck),
                "model/params/decoder": count(self.backbone.decoder)}

    def forward(self, x: Tensor) -> AEOutput:
        code = self.encode(x)
        z = code.z
        z_dec = z + self.latent_noise * torch.randn_like(z) if self.training and self.latent_noise > 0 else z
        return AEOutput(
            x_hat=self.decode(z_dec, code.maps),
            z=z,
            feature=code.feature,
            mu=code.mu,
            logvar=code.logvar,
            projection=self.projection(z) if self.projection is not None else None,
            logits=self.classifier(z) if self.classifier is not None else None,
            vq=code.vq,
        )

    def embed(self, x: Tensor, with_logvar: bool = False, with_feature: bool = False) -> Tensor:
        """The representation probes read: ``(B, latent_dim [+ latent_dim] [+ feature_dim])``.

        z for a deterministic bottleneck, mu for a gaussian one (in any mode: embeddings are never samples);
        ``with_logvar`` appends logvar (gaussian only), ``with_feature`` appends the pre-bottleneck feature.
        Gradients are not disabled here: wrap the call in ``torch.inference_mode()`` for evaluation.
        """
        if with_logvar and not self.gaussian:
            raise ValueError("with_logvar needs a gaussian bottleneck; this model is deterministic")
        z, mu, logvar, feature = self.encode(x)[:4]
        parts = [mu if self.gaussian else z]
        if with_logvar:
            parts.append(logvar)
        if with_feature:
            parts.append(feature)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
