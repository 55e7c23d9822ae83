"""One concrete trial: TrialConfig and its sections (dataset, model, objective, train, eval), every field a value.

Names a trial refers to (datasets, backbones, metrics, probes, ...) are checked against the registries' declarations
without importing the modules that implement them (see ``aesweep.registry``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from aesweep import registry
from aesweep.spec import schedules, variants

# model.initialise's weight schemes; the first is the default.
INIT_SCHEMES = ("torch", "lecun_normal")
# The decoder's last activations, nets.OUTPUT_ACTIVATIONS' keys; the first is the default.
OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "linear")

# --------------------------------------------------------------------------------------------------------------

# Name checks against the registries. A built-in name is checked against its declaration without importing the
# registering modules (torch, scikit-learn); any other name against the registry, filled by registry.load_all().


def _registered(reg: registry.Registry) -> Callable[[str], str]:
    def check(name: str) -> str:
        try:
            registry.check(reg, name)
        except registry.UnknownNameError as err:  # pydantic reports ValueErrors, not KeyErrors
            raise ValueError(str(err)) from None
        return name

    return check


def _registered_list(reg: registry.Registry) -> Callable[[list[str]], list[str]]:
    def check(names: list[str]) -> list[str]:
        unknown = [n for n in names if not registry.known(reg, n)]
        if unknown:
            raise ValueError(f"unknown {reg.kind} {unknown[0]!r}; known: {', '.join(reg.names())}")
        return names

    return check


def _known_variant(name: str) -> str:
    try:
        variants.parts(name)
    except registry.UnknownNameError as err:
        raise ValueError(str(err)) from None
    return name


DatasetName = Annotated[str, AfterValidator(_registered(registry.DATASETS))]
BackboneName = Annotated[str, AfterValidator(_registered(registry.BACKBONES))]
ScheduleName = Annotated[str, AfterValidator(_registered(registry.SCHEDULES))]
VariantName = Annotated[str, AfterValidator(_known_variant)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


# --------------------------------------------------------------------------------------------------------------
# TrialConfig: one concrete trial.


class DatasetConfig(Strict):
    name: DatasetName = "shapes"
    root: str | None = None  # default: $AESWEEP_DATA or ~/.cache/aesweep
    download: bool = True  # fetch missing files through torchvision (checksums verified)
    train_size: PositiveInt | None = None  # subset of the train split (before carving val); None = all
    test_size: PositiveInt | None = None
    val_fraction: Fraction = 0.1  # carved from train, seeded
    seed: int = 0  # subset and split seed
    # k-fold cross-validation: with ``folds: k`` the train subset is cut into k seeded folds, fold ``fold`` is the
    # validation split and the other k-1 train (val_fraction is then unused). Sweep ``fold: {grid: [0..k-1]}``
    # and the report aggregates over folds (mean and std), as the Fashion-MNIST beta-VAE study did.
    folds: Annotated[int, Field(ge=2)] | None = None
    fold: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _fold_in_range(self) -> DatasetConfig:
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is not one of the {self.folds} folds (0..{self.folds - 1})")
        return self


class ModelConfig(Strict):
    backbone: BackboneName = "conv"
    latent_dim: PositiveInt = 32
    width: PositiveFloat = 1.0  # channel / unit multiplier of the backbone
    depth: PositiveInt | None = None  # backbone-specific (mlp: hidden layers 1..8); None = backbone default
    projection_dim: PositiveInt = 128  # contrastive projection head output
    # Backbone settings (backbone_rules.SETTINGS; each backbone declares which it takes, the others reject them
    # with the line). None = the backbone's default.
    widths: list[PositiveInt] | None = None  # mlp: encoder hidden widths, e.g. [256, 128]; default eq. (1) of 003
    decoder_widths: list[PositiveInt] | None = None  # mlp: the decoder's hidden widths; default: widths mirrored
    channels: list[PositiveInt] | None = None  # conv: channels of every encoder block, e.g. [32, 64, 128]
    strides: list[PositiveInt] | None = None  # conv: the stride (1 or 2) of every block of channels; default 2
    skip_connections: bool | None = None  # conv: decoder stages also receive the encoder maps (U-Net style)
    dropout: Fraction | None = None  # mlp / conv: dropout after every hidden layer / block; default 0
    # The decoder's last activation; default sigmoid. linear: unbounded in training, clamped to [0, 1] in eval
    # (nets.LinearOutput; not with a bce reconstruction, whose input must be a probability).
    output_activation: Literal[OUTPUT_ACTIVATIONS] | None = None  # type: ignore[valid-type]
    # Initial weights of every Linear and conv layer (INIT_SCHEMES): torch = PyTorch's layer defaults;
    # lecun_normal = JAX/Flax's Dense and Conv default (truncated normal of variance 1 / fan_in, zero bias), the
    # init of a study written in JAX (002).
    init: Literal[INIT_SCHEMES] = "torch"  # type: ignore[valid-type]
    # The classifier head (variants with a classifier head only): hidden widths, e.g. [64]; [] = one Linear.
    head_widths: list[PositiveInt] = Field(default_factory=list)
    head_dropout: Fraction = 0.0  # dropout after every hidden layer of the head
    head_batchnorm: bool = False  # BatchNorm1d after every hidden Linear of the head


class DiscriminatorConfig(Strict):
    """FactorVAE's discriminator: an MLP on z (LeakyReLU 0.2 after each hidden layer, 2 logits), trained by Adam
    with its own learning rate and betas. The paper's is 6 layers of 1000 units, lr 1e-4, betas (0.5, 0.9)."""

    widths: list[PositiveInt] = Field(min_length=1)
    lr: PositiveFloat = 1e-4
    betas: tuple[Fraction, Fraction] = (0.5, 0.9)


class PriorConfig(Strict):
    """Diagonal Gaussian prior N(mean, diag(std^2)); a scalar broadcasts over the latent dimensions."""

    mean: float | list[float] = 0.0
    std: PositiveFloat | list[PositiveFloat] = 1.0


class ObjectiveConfig(Strict):
    variant: VariantName = "ae"
    recon: Literal["mse", "bce", "mae", "mse+mae"] = "mse"
    mae_weight: NonNegFloat = 1.0  # weight of the MAE part of mse+mae
    recon_weight: NonNegFloat | None = None  # None: 1 if the variant reconstructs, else 0
    # How beta (the KL weight) is normalised against the per-pixel-mean reconstruction (variants.kl_divisor):
    # elbo = beta / (C*H*W), the per-image ELBO (MSE: Gaussian decoder of variance 1/2); latent_mean = beta /
    # latent_dim, mean over latent dims (study 000); unscaled = beta. docs/studies.md gives the evidence.
    kl_scale: Literal["elbo", "latent_mean", "unscaled"] = "elbo"
    # Variant knobs (see variants.PRESETS for who owns which). None = not used by this trial's variant.
    sparsity: NonNegFloat | None = None
    noise_sigma: NonNegFloat | None = None
    beta: NonNegFloat | None = None
    prior: PriorConfig | None = None
    latent_noise: NonNegFloat | None = None
    temperature: PositiveFloat | None = None
    # Two-view variants: the random crop's zero padding in pixels (None: min(H, W) // 8, i.e. 3 px on 28x28, 4 on
    # 32x32; 0: no crop) and the contrast / brightness jitter (+-, 0: none) of each view.
    augment_pad: NonNegInt | None = None
    augment_jitter: NonNegFloat | None = None
    # Two-view variants: the smallest area fraction of SimCLR's random resized crop (0.08 in SimCLR, 0.2 in
    # SupContrast), applied before the padded crop; None: no resized crop.
    augment_scale: Annotated[float, Field(gt=0, le=1)] | None = None
    softmax_mae_weight: NonNegFloat | None = None  # classifier: weight of MAE(softmax, one-hot) beside CE (004)
    # The disentangling and generative families (variants.PRESETS). beta-TCVAE: alpha weighs the index-code
    # mutual information, beta the total correlation, gamma the dimension-wise KL; tc_estimator is the paper's
    # minibatch weighted (mws) or stratified (mss) sampling estimate of q(z). FactorVAE: gamma weighs the
    # discriminator's TC estimate; discriminator has no default (the paper's 6 x 1000 MLP costs more than most
    # encoders here, so it is the user's choice).
    alpha: NonNegFloat | None = None
    gamma: NonNegFloat | None = None
    tc_estimator: Literal["mws", "mss"] | None = None
    discriminator: DiscriminatorConfig | None = None
    # DIP-VAE: weights of the squared off-diagonal and (diagonal - 1) entries of the code's covariance.
    lambda_od: NonNegFloat | None = None
    lambda_d: NonNegFloat | None = None
    # InfoVAE / WAE / mmd: the MMD kernel (rbf: a mixture of Gaussian bandwidths; imq: WAE's inverse
    # multiquadratic) and InfoVAE's MMD weight.
    mmd_kernel: Literal["rbf", "imq"] | None = None
    mmd_weight: NonNegFloat | None = None
    # VQ-VAE: codes in the codebook, the size of one code vector (latent_dim must be a multiple; None: one vector
    # of latent_dim), the commitment cost, and the EMA decay of the codebook (None: learnt by the codebook loss).
    codebook_size: Annotated[int, Field(ge=2)] | None = None
    code_dim: PositiveInt | None = None
    commitment: NonNegFloat | None = None
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    # RAE: the decoder's regulariser (l2: its squared weights; gp: the squared norm of its Jacobian at z) and
    # its weight; beta weighs ||z||^2 / 2.
    decoder_reg: Literal["l2", "gp"] | None = None
    decoder_reg_weight: NonNegFloat | None = None
    # IWAE: importance samples per image (1 is the ELBO).
    iwae_samples: PositiveInt | None = None


class EarlyStoppingConfig(Strict):
    patience: PositiveInt | None = 5  # epochs without improvement; None disables
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    min_delta: NonNegFloat = 0.0


class ScheduleConfig(Strict):
    """The learning rate per epoch (schedules.py): ``name`` (a registered schedule), a linear warm-up of
    ``warmup_epochs`` epochs, and the schedule's own params (None = its default; another schedule's is an error)."""

    name: ScheduleName = "constant"
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    min_lr: NonNegFloat | None = None  # cosine: the rate it anneals towards (0)
    step_epochs: PositiveInt | None = None  # step: epochs between decays (10)
    gamma: PositiveFloat | None = None  # step: the decay factor (0.1)

    def params(self) -> dict[str, Any]:
        """The schedule params that are set."""
        return {k: getattr(self, k) for k in SCHEDULE_PARAMS if getattr(self, k) is not None}


SCHEDULE_PARAMS = ("min_lr", "step_epochs", "gamma")


class TrainConfig(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: NonNegFloat = 0.0
    grad_clip: PositiveFloat | None = None
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast, CUDA only
    # torch.compile the training forward: true, false, or auto (CUDA only). On a 2-core CPU it gained -6..+10%
    # (run-to-run noise) after a 15 s cold compile per worker (docs/performance.md), so it is off by default.
    compile: bool | Literal["auto"] = False
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrainConfig:
        # A searched epochs or warm-up can only be checked here, on the concrete trial.

        sch = self.schedule
        found = schedules.problems(sch.name, self.epochs, sch.warmup_epochs, sch.params())
        if found:
            raise ValueError(f"schedule.{found[0][0]}: {found[0][1]}")
        return self


class TorchMLPProbeConfig(Strict):
    """The ``mlp_torch`` probe: a torch MLP classifier trained on the frozen embeddings (the paradigms studies'
    classifier on a frozen encoder), with Adam and early stopping on a stratified validation slice of its
    training rows; the weights of the best validation epoch are kept."""

    widths: list[PositiveInt] = Field(default_factory=lambda: [64])  # hidden layers; [] = a linear classifier
    dropout: Fraction = 0.2  # after every hidden layer
    batchnorm: bool = False  # BatchNorm1d before each hidden ReLU (004's classifier)
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegFloat = 0.0
    batch_size: PositiveInt = 128
    max_epochs: PositiveInt = 100
    patience: PositiveInt = 10  # epochs without a better validation accuracy (scikit-learn's MLP: 10)
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1  # of the probe's training rows, stratified


# Components of the gmm latent density when gmm_components is not given: RAE's and pythae's 10.
GMM_COMPONENTS = 10


class SampleQualityConfig(Strict):
    """``eval.sample_quality``: FID and precision / recall / density / coverage of ``eval.gen_samples`` decoded
    latent samples against as many real images, in the feature space of one extractor
    (evaluation/sample_quality.py; logged as ``gen/<extractor>/<measure>``)."""

    # classifier: a small CNN trained once per dataset and cached (offline); inception: torchvision's
    # ImageNet Inception-v3 pool3 (its weights file must be in torch's hub cache); pixels: the raw pixels.
    features: Annotated[str, AfterValidator(_registered(registry.SAMPLE_FEATURES))] = "classifier"
    metrics: Annotated[list[str], Field(min_length=1), AfterValidator(_registered_list(registry.SAMPLE_QUALITY))
                       ] = Field(default_factory=lambda: ["fid", "prdc"])
    k: PositiveInt = 5  # PRDC's nearest neighbours (Naeem et al. 2020: 5)
    # Where latent samples come from: prior = the rule of eval.generative (a gaussian bottleneck's prior, mmd's
    # N(0, I), a Gaussian fitted to a deterministic AE's train codes); gmm = a Gaussian mixture fitted to the train
    # codes (the ex-post density of RAE, Ghosh et al. 2020).
    latent_density: Literal["prior", "gmm"] = "prior"
    gmm_components: PositiveInt | None = None  # gmm only; None = GMM_COMPONENTS


class DisentanglementConfig(Strict):
    """Sizes of the disentanglement protocols (evaluation/disentanglement.py): disentanglement_lib's study defaults
    (Locatello et al. 2019, config/unsupervised_study_v1/metric_configs/*.gin, in brackets) divided by 5 where
    they count images or votes, its batch sizes, bins and threshold kept. On a 2-core CPU and shapes, DCI's boosted
    trees take ~40 s at these sizes, every other measure a few seconds."""

    # Codes of train-split images: MIG and modularity, the fits of SAP, DCI and explicitness, the pool that BetaVAE's
    # and FactorVAE's training batches and FactorVAE's global variances are drawn from (10000).
    num_train: PositiveInt = 2_000
    # Codes of test-split images: what SAP, DCI and explicitness score, the pool of the evaluation votes (5000).
    num_test: PositiveInt = 1_000
    batch_size: PositiveInt = 64  # BetaVAE: image pairs per point; FactorVAE: images per vote, one factor fixed (64)
    num_votes: PositiveInt = 2_000  # BetaVAE training points, FactorVAE training votes (10000)
    num_eval_votes: PositiveInt = 1_000  # BetaVAE evaluation points, FactorVAE evaluation votes (5000)
    num_bins: Annotated[int, Field(ge=2)] = 20  # histogram bins per code dimension for MIG and modularity (20)
    # FactorVAE: a code dimension whose std over the train codes is below this is collapsed and gets no vote (0.05).
    prune_threshold: NonNegFloat = 0.05


class EvalConfig(Strict):
    """What ``evaluate`` measures at the end of a trial (and, cheaply, during it)."""

    metrics: Annotated[list[str], AfterValidator(_registered_list(registry.METRICS))] = Field(
        default_factory=lambda: ["mse", "rmse", "mae", "psnr", "ssim", "uqi", "ergas", "bce"]
    )
    probes: Annotated[list[str], AfterValidator(_registered_list(registry.PROBES))] = Field(
        default_factory=lambda: ["logreg", "knn"]
    )
    clustering: Annotated[list[str], AfterValidator(_registered_list(registry.CLUSTERERS))] = Field(
        default_factory=lambda: ["kmeans"]
    )
    generative: list[Literal["coverage", "information_rate", "factors"]] = Field(default_factory=list)
    sample_quality: SampleQualityConfig | None = None  # None = not measured
    # Disentanglement measures (registry.DISENTANGLEMENT: mig, sap, dci, betavae, factorvae, modularity,
    # explicitness), logged as dis/<name>; datasets with generative factors only (shapes, dsprites).
    disentanglement: Annotated[list[str], AfterValidator(_registered_list(registry.DISENTANGLEMENT))] = Field(
        default_factory=list
    )
    disentanglement_protocol: DisentanglementConfig = Field(default_factory=DisentanglementConfig)
    figures: list[Literal[tuple(registry.declared(registry.FIGURES))]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["reconstructions", "latent_pca"]
    )
    # Probe protocol: fixed hyperparameters (fast) or the published GridSearchCV protocol (paper).
    protocol: Literal["fast", "paper"] = "fast"
    preprocessing: Literal["standard", "robust_pca", "minmax_kbest"] = "standard"
    backend: Literal["auto", "torch", "sklearn"] = "auto"  # auto: device fast paths where they match sklearn
    with_logvar: bool = False  # gaussian bottlenecks: embed [mu, logvar] (the CIFAR-10 study) instead of mu
    with_feature: bool = False  # append the pooled pre-bottleneck feature to z
    subsample: PositiveInt | None = 10_000  # bound on probe training rows (cheap probes)
    # Bound on rows for random_forest and mlp. 10k, as for the cheap probes: at 5k the forest scored 1-2 points
    # under the published protocol on 10k rows (bench/probes.py); at 10k it is within a point, ~2.5x the cost.
    slow_subsample: PositiveInt | None = 10_000
    label_efficiency: list[PositiveInt] = Field(default_factory=list)  # labels per class, e.g. [10, 100, 1000]
    # Also score each probe on the rows it was fitted on and on the validation split (probe/<name>/train_acc,
    # val_acc): the paradigms study's train / val / test table. Fast protocol only.
    probe_splits: bool = False
    cluster_subsample: PositiveInt | None = 5_000  # bound on test rows clustered by gmm / hdbscan
    hdbscan_min_cluster_size: PositiveInt = 15
    cluster_pca_dim: PositiveInt | None = 32  # hdbscan on a PCA reduction of the embeddings; None = raw
    gen_samples: PositiveInt = 1_000  # prior samples decoded for generative metrics and figures
    # Distance between two images for coverage / nn_distance: per-pixel RMSE, or the Euclidean norm of the
    # difference over all C*H*W pixels in [0, 1] (= RMSE * sqrt(C*H*W); the AE-vs-VAE study's, threshold 3).
    coverage_distance: Literal["rmse", "euclidean"] = "rmse"
    # In the units of coverage_distance; None = median real-to-real NN distance.
    coverage_threshold: PositiveFloat | None = None
    # The real images the generative and latent metrics use (coverage's reference set, the codes of the
    # information rate and the factor correlations): the test split, or every image the dataset holds (train,
    # validation and test), the shapes study's "set of valid images to compare against".
    generative_images: Literal["test", "all"] = "test"
    rate_noise_sigma: PositiveFloat = 1.0  # std of the latent noise eps in the information rate
    online_probe_every: PositiveInt | None = None  # epochs between cheap validation probes; None = off
    online_probe_size: PositiveInt = 2_000  # validation rows the online probe uses
    # Disentanglement measured with the online probe (every online_probe_every epochs), on online_probe_size train
    # and validation codes, as val/dis/<key>: what lets a scheduler rank trials on disentanglement. The cheap
    # measures only (no model is fitted): mig, modularity.
    online_disentanglement: list[Literal["mig", "modularity"]] = Field(default_factory=list)
    # ERGAS's resolution ratio: 100 / ratio * relative RMSE. 1 (a reconstruction has its input's resolution);
    # torchmetrics' default is 4 (pan-sharpening).
    ergas_ratio: PositiveFloat = 1.0
    mlp_torch: TorchMLPProbeConfig = Field(default_factory=TorchMLPProbeConfig)


class TrialConfig(Strict):
    """One concrete trial: what ``train.run_trial`` consumes. Never holds a distribution."""

    name: str = "trial"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def flat(self) -> dict[str, Any]:
        """The config flattened with dots (MLflow params); None values are left out."""
        return flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        elif value is not None:
            out[path] = value
    return out


