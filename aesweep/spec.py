"""The sweep spec: one YAML file, typed, conditional.

Two families of pydantic models:

- ``TrialConfig``: one concrete trial. Every field holds a value; no distribution ever.
- ``SweepSpec``: the file. Its searchable sections (dataset, model, objective, train, eval) are generated from
  the TrialConfig sections so that every field may also hold a distribution: ``{choice: [...]}``,
  ``{grid: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{int: [lo, hi]}``. Generating them keeps
  one source of truth for names, types, bounds and defaults.

Knobs that belong to one variant (beta for vae/mmd, sparsity for sparse, ...) may be given flat in
``objective`` or per variant (``objective.vae.beta``); ``SweepSpec.resolve`` decides the variant first and then
asks only for the knobs of the variant drawn, so a define-by-run searcher never samples beta for a sparse AE.

Errors are reported as ``FILE:LINE: dotted.field.path: message``, LINE taken from the YAML node.
"""
from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from aesweep import backbone_rules, catalog, registry, variants, yamlsafe

# --------------------------------------------------------------------------------------------------------------
# Name checks against the registries. A built-in name is checked against aesweep.catalog without importing the
# registering modules (torch, scikit-learn); any other name against the registry, filled by registry.load_all().


def _registered(reg: registry.Registry) -> Callable[[str], str]:
    def check(name: str) -> str:
        try:
            catalog.check(reg, name)
        except registry.UnknownNameError as err:  # pydantic reports ValueErrors, not KeyErrors
            raise ValueError(str(err)) from None
        return name

    return check


def _registered_list(reg: registry.Registry) -> Callable[[list[str]], list[str]]:
    def check(names: list[str]) -> list[str]:
        unknown = [n for n in names if not catalog.known(reg, n)]
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
    output_activation: Literal[catalog.OUTPUT_ACTIVATIONS] | None = None  # type: ignore[valid-type]
    # Initial weights of every Linear and conv layer (model.INIT_SCHEMES): torch = PyTorch's layer defaults;
    # lecun_normal = JAX/Flax's Dense and Conv default (truncated normal of variance 1 / fan_in, zero bias), the
    # init of a study written in JAX (002).
    init: Literal[catalog.INIT_SCHEMES] = "torch"  # type: ignore[valid-type]
    # The classifier head (variants with a classifier head only): hidden widths, e.g. [64]; [] = one Linear.
    head_widths: list[PositiveInt] = Field(default_factory=list)
    head_dropout: Fraction = 0.0  # dropout after every hidden layer of the head
    head_batchnorm: bool = False  # BatchNorm1d after every hidden Linear of the head


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
        from aesweep import schedules

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
    figures: list[Literal[catalog.FIGURES]] = Field(  # type: ignore[valid-type]
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


# --------------------------------------------------------------------------------------------------------------
# Distributions. A field of type T in a searchable section accepts T or one of these; which kinds are allowed
# depends on T (uniform on an integer field is an error, not a silent rounding).

V = TypeVar("V")
DIST_KEYS = ("choice", "grid", "uniform", "loguniform", "int")


class Distribution(BaseModel):
    """A searched field. Each kind owns its ends and its seeded draw, so that no caller switches on kinds:
    ``low()`` / ``high()`` are the smallest and largest value it can yield (for categorical options: the
    smallest / largest when all are numbers, else the first), ``draw(rng)`` one value from ``random.Random``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def first(self) -> Any:
        """The value a trial takes when nobody searches: the first option or the low end."""
        raise NotImplementedError

    def low(self) -> Any:
        raise NotImplementedError

    def high(self) -> Any:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """One value from an Optuna trial (duck-typed: ``suggest_categorical`` / ``suggest_float`` /
        ``suggest_int``), under ``name``."""
        raise NotImplementedError


def _numeric(options: list[Any]) -> bool:
    return all(isinstance(o, int | float) and not isinstance(o, bool) for o in options)


class _Categorical(Distribution):
    """Choice and grid: a list of options, drawn with equal probability."""

    @property
    def options(self) -> list[Any]:
        raise NotImplementedError

    def first(self) -> Any:
        return self.options[0]

    def low(self) -> Any:
        return min(self.options) if _numeric(self.options) else self.options[0]

    def high(self) -> Any:
        return max(self.options) if _numeric(self.options) else self.options[0]

    def draw(self, rng: random.Random) -> Any:
        return self.options[rng.randrange(len(self.options))]

    def suggest(self, trial: Any, name: str) -> Any:
        options = self.options
        if all(o is None or isinstance(o, bool | int | float | str) for o in options):
            return trial.suggest_categorical(name, options)
        # Optuna's categories must be plain values: index the others (priors, lists).
        return options[trial.suggest_categorical(name, list(range(len(options))))]


class Choice(_Categorical, Generic[V]):
    choice: Annotated[list[V], Field(min_length=1)]

    @property
    def options(self) -> list[Any]:
        return list(self.choice)


class Grid(_Categorical, Generic[V]):
    """Like choice, but exhaustive: grid search runs every value (and TPE treats it as categorical)."""

    grid: Annotated[list[V], Field(min_length=1)]

    @property
    def options(self) -> list[Any]:
        return list(self.grid)


def _ordered(lo_hi: tuple[Any, Any]) -> None:
    if not lo_hi[0] < lo_hi[1]:
        raise ValueError(f"low {lo_hi[0]} must be below high {lo_hi[1]}")


class Uniform(Distribution, Generic[V]):
    uniform: tuple[V, V]

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        _ordered(self.uniform)
        return self

    def first(self) -> Any:
        return self.uniform[0]

    def low(self) -> Any:
        return self.uniform[0]

    def high(self) -> Any:
        return self.uniform[1]

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(*self.uniform)

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.uniform)


class LogUniform(Distribution, Generic[V]):
    loguniform: tuple[V, V]

    @model_validator(mode="after")
    def _check(self) -> LogUniform:
        if self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs a positive low end, got {self.loguniform[0]}")
        _ordered(self.loguniform)
        return self

    def first(self) -> Any:
        return self.loguniform[0]

    def low(self) -> Any:
        return self.loguniform[0]

    def high(self) -> Any:
        return self.loguniform[1]

    def draw(self, rng: random.Random) -> float:
        lo, hi = self.loguniform
        return min(hi, max(lo, math.exp(rng.uniform(math.log(lo), math.log(hi)))))  # exp(log(x)) may round out

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.loguniform, log=True)


class IntRange(Distribution, Generic[V]):
    """Integers lo..hi inclusive; ``log: true`` samples on a log scale (latent sizes)."""

    bounds: tuple[V, V] = Field(alias="int")
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.log and self.bounds[0] <= 0:
            raise ValueError(f"int with log: true needs a positive low end, got {self.bounds[0]}")
        _ordered(self.bounds)
        return self

    def first(self) -> Any:
        return self.bounds[0]

    def low(self) -> Any:
        return self.bounds[0]

    def high(self) -> Any:
        return self.bounds[1]

    def draw(self, rng: random.Random) -> int:
        """Uniform over lo..hi, or with ``log``: log-uniform over [lo - 1/2, hi + 1/2] rounded to the nearest
        integer (Optuna's rule), so that each integer k has probability proportional to log((k + 1/2) / (k - 1/2))
        and every octave gets the same share."""
        lo, hi = int(self.bounds[0]), int(self.bounds[1])
        if not self.log:
            return rng.randint(lo, hi)
        value = round(math.exp(rng.uniform(math.log(lo - 0.5), math.log(hi + 0.5))))
        return min(hi, max(lo, value))

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, *self.bounds, log=self.log)


def lowest(value: Any) -> Any:
    """The smallest value a field can take: its distribution's low end, or the value itself when fixed."""
    return value.low() if isinstance(value, Distribution) else value


def highest(value: Any) -> Any:
    """The largest value a field can take: its distribution's high end, or the value itself when fixed."""
    return value.high() if isinstance(value, Distribution) else value


def _dist_kind(value: Any) -> str | None:
    """Discriminator: the distribution kind of a mapping (or a parsed distribution), None for none or several."""
    if isinstance(value, Distribution):
        return _dist_kind_name(value)
    keys = [k for k in DIST_KEYS if isinstance(value, dict) and k in value]
    return keys[0] if len(keys) == 1 else None


def is_distribution_like(value: Any) -> bool:
    return isinstance(value, Distribution) or (isinstance(value, dict) and any(k in value for k in DIST_KEYS))


# Tags that pydantic puts into error locations; they are not part of the user's path and are stripped.
_TAG = "~"


def _base_type(annotation: Any) -> Any:
    """The innermost non-None, non-Annotated type, to decide which distributions a field allows."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _base_type(members[0])
        return annotation
    return annotation


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
    return annotation


def _dist_union(annotation: Any) -> Any:
    base = _base_type(annotation)
    scalar = _without_none(annotation)
    kinds: list[Any] = [Annotated[Choice[annotation], Tag("choice")], Annotated[Grid[annotation], Tag("grid")]]
    if base is float:
        kinds += [
            Annotated[Uniform[scalar], Tag("uniform")],
            Annotated[LogUniform[scalar], Tag("loguniform")],
            Annotated[IntRange[scalar], Tag("int")],
        ]
    elif base is int:
        kinds += [Annotated[IntRange[scalar], Tag("int")]]
    return Annotated[Union[tuple(kinds)], Discriminator(_dist_kind)]  # noqa: UP007


def _searchable_annotation(annotation: Any) -> Any:
    """T -> T | distribution over T; a nested section becomes its searchable twin (or a distribution over it)."""
    base = _base_type(annotation)
    value_type = annotation
    if isinstance(base, type) and issubclass(base, Strict):
        nested = searchable(base)
        value_type = nested | None if _without_none(annotation) is not annotation else nested
    return Annotated[
        Union[  # noqa: UP007
            Annotated[_dist_union(annotation), Tag(_TAG + "dist")],
            Annotated[value_type, Tag(_TAG + "value")],
        ],
        Discriminator(lambda v: _TAG + ("dist" if is_distribution_like(v) else "value")),
    ]


def _field_annotation(info: FieldInfo) -> Any:
    # pydantic moves Annotated metadata (bounds, validators) out of the annotation; put it back on the type.
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _copy_default(info: FieldInfo) -> FieldInfo:
    factory = info.default_factory
    if isinstance(factory, type) and issubclass(factory, Strict):
        factory = searchable(factory)  # a nested section's default is its searchable twin
    if factory is not None:
        return Field(default_factory=factory, alias=info.alias)
    return Field(default=info.default, alias=info.alias)


_SEARCHABLE: dict[type, type[BaseModel]] = {}


def searchable(model: type[Strict]) -> type[BaseModel]:
    """The searchable twin of a config section: same fields, defaults and bounds; each may be a distribution."""
    if model not in _SEARCHABLE:
        fields = {
            name: (_searchable_annotation(_field_annotation(info)), _copy_default(info))
            for name, info in model.model_fields.items()
        }
        _SEARCHABLE[model] = create_model(f"Searchable{model.__name__}", __base__=Strict, **fields)
    return _SEARCHABLE[model]


# The objective also has one optional section per variant, holding that variant's knobs only: a sweep over
# variants samples a knob only for the variant drawn. Any knob is typed here; the wrong-variant check is
# semantic (see _check_variant_knobs) so that its message can say which knobs the variant does own.
_SearchableObjectiveBase = searchable(ObjectiveConfig)
_KnobSection = create_model(
    "VariantKnobs",
    __base__=Strict,
    **{
        knob: (_searchable_annotation(_field_annotation(ObjectiveConfig.model_fields[knob])), None)
        for knob in variants.KNOBS
    },
)
SearchableObjective = create_model(
    "SearchableObjectiveConfig",
    __base__=_SearchableObjectiveBase,
    **{preset.name: (_KnobSection | None, None) for preset in variants.PRESETS},
)
_SEARCHABLE[ObjectiveConfig] = SearchableObjective


# --------------------------------------------------------------------------------------------------------------
# Sweep-level sections: never searched.

Metric = Annotated[str, Field(min_length=1)]


class SchedulerConfig(Strict):
    """Early stopping across trials: ``asha`` on one per-epoch metric, ``moasha`` on several (aesweep.moasha)."""

    name: Literal["none", "asha", "moasha"] = "none"
    grace_period: PositiveInt = 1  # epochs before a trial may be stopped (the first rung)
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0
    max_t: PositiveInt | None = None  # epochs at which a trial is stopped; default: the most train.epochs allows
    metric: Metric | None = None  # asha; default: the first search metric, reported per epoch (e.g. val/loss)
    mode: Literal["min", "max"] | None = None  # asha
    # moasha: per-epoch metrics with their modes; default: the per-epoch counterparts of search.metrics
    # (test/mse -> val/mse, probe/knn/acc -> val/probe/knn/acc, see PER_EPOCH_COUNTERPARTS).
    metrics: Annotated[dict[Metric, Literal["min", "max"]], Field(min_length=1)] | None = None


# Metrics run_trial reports at every epoch (train.py), and those the online probe adds every
# eval.online_probe_every epochs. A scheduler ranks trials at a rung on what each reported at that epoch.
PER_EPOCH_METRICS = ("train/loss", "val/loss", "val/mse", "val/psnr", "time/epoch_s")
PER_EPOCH_PREFIXES = ("loss/", "val/loss/")  # loss terms: which exist depends on the variant
ONLINE_PROBE_METRICS = ("val/probe/knn/acc", "val/probe/logreg/acc")
# A final metric -> the per-epoch metric that measures the same thing on the validation split.
PER_EPOCH_COUNTERPARTS = {"test/loss": "val/loss", "test/mse": "val/mse", "test/psnr": "val/psnr",
                          "probe/knn/acc": "val/probe/knn/acc", "probe/logreg/acc": "val/probe/logreg/acc"}


def per_epoch_counterpart(metric: str) -> str | None:
    """The per-epoch metric standing for ``metric`` during training: itself if it is reported every epoch (or
    by the online probe), its validation counterpart for a final one, None when there is none."""
    if metric in PER_EPOCH_METRICS or metric in ONLINE_PROBE_METRICS or metric.startswith(PER_EPOCH_PREFIXES):
        return metric
    if metric.startswith("test/loss/"):
        return "val/loss/" + metric[len("test/loss/"):]
    return PER_EPOCH_COUNTERPARTS.get(metric)


class SearchConfig(Strict):
    algorithm: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    # Objective(s) with their modes, in order; several = multi-objective (nsga2 / multi-objective TPE).
    metrics: Annotated[dict[Metric, Literal["min", "max"]], Field(min_length=1)] = Field(
        default_factory=lambda: {"val/loss": "min"}
    )
    num_samples: PositiveInt = 8
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    max_concurrent: PositiveInt | None = None
    seeds: PositiveInt = 1  # each configuration runs with this many training seeds
    seed: int = 0  # the searcher's seed
    max_failures: Annotated[int, Field(ge=0)] = 2  # retries of a trial whose process or node died

    @model_validator(mode="before")
    @classmethod
    def _scheduler_shorthand(cls, data: Any) -> Any:
        # `scheduler: asha` is the common case; accept it as {name: asha}.
        if isinstance(data, dict) and isinstance(data.get("scheduler"), str):
            data = {**data, "scheduler": {"name": data["scheduler"]}}
        return data


class ResourcesConfig(Strict):
    cpu: Annotated[float, Field(gt=0)] = 1.0
    gpu: Annotated[float, Field(ge=0)] = 0.0  # a fraction (0.25) packs several trials on one GPU


class TrackingConfig(Strict):
    uri: str | None = None  # else --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str | None = None  # default: the sweep name
    storage: str | None = None  # Ray Tune storage_path; default ./aesweep-results


SweepName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
SEARCHABLE_SECTIONS = ("dataset", "model", "objective", "train", "eval")
SearchableDataset = searchable(DatasetConfig)
SearchableModel = searchable(ModelConfig)
SearchableTrain = searchable(TrainConfig)
SearchableEval = searchable(EvalConfig)


# --------------------------------------------------------------------------------------------------------------
# The file.

Chooser = Callable[[str, Distribution], Any]


def first_value(path: str, dist: Distribution) -> Any:
    """The chooser of `train-one` and of validation: first option, or the low end of a range."""
    return dist.first()


class SweepSpec(Strict):
    """A sweep file: fixed values and distributions; resolve it into TrialConfigs."""

    name: SweepName
    description: str | None = None
    dataset: SearchableDataset = Field(default_factory=SearchableDataset)
    model: SearchableModel = Field(default_factory=SearchableModel)
    objective: SearchableObjective = Field(default_factory=SearchableObjective)
    train: SearchableTrain = Field(default_factory=SearchableTrain)
    eval: SearchableEval = Field(default_factory=SearchableEval)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    # Named variants of this sweep: ``stages: {search: {search.algorithm: nsga2, ...}}``, dotted keys -> values,
    # applied by ``run --stage search`` (the stage's sweep is named ``<name>-<stage>`` unless it sets a name).
    stages: dict[SweepName, dict[str, Any]] = Field(default_factory=dict)

    _source: str | None = PrivateAttr(default=None)
    _data: dict[str, Any] = PrivateAttr(default_factory=dict)
    _locate: Callable[[tuple], tuple[int | None, str]] | None = PrivateAttr(default=None)

    # -- identity ---------------------------------------------------------------------------------------------
    def problem(self, loc: tuple, message: str) -> Problem:
        """A problem at ``loc`` (a field path) of this spec, with the line that set the field (its stage or
        --set origin named), for checks made after parsing (such as the memory estimate)."""
        line, origin = self._locate(loc) if self._locate is not None else (None, "")
        return Problem(self._source or "<spec>", line, _loc_path(loc) + origin, message)

    @property
    def source(self) -> str | None:
        """The file this spec was loaded from, if any."""
        return self._source

    @property
    def data(self) -> dict[str, Any]:
        """The document as loaded (after --set overrides): what the parent run stores as the spec artifact."""
        return copy.deepcopy(self._data) or self.model_dump(mode="json", by_alias=True)

    @property
    def hash(self) -> str:
        canonical = yaml.safe_dump(self.data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # -- the search space ---------------------------------------------------------------------------------------
    def possible_variants(self) -> list[str]:
        variant = self.objective.variant
        return list(variant.options) if isinstance(variant, Distribution) else [variant]

    def parameters(self) -> dict[str, Distribution]:
        """Every distribution in the spec by its path, conditional ones included (``objective.vae.beta``)."""
        found: dict[str, Distribution] = {}

        def walk(path: str, value: Any) -> None:
            if isinstance(value, Distribution):
                found[path] = value
            elif isinstance(value, BaseModel):
                for key in type(value).model_fields:
                    walk(f"{path}.{key}" if path else key, getattr(value, key))

        for section in SEARCHABLE_SECTIONS:
            walk(section, getattr(self, section))
        return found

    def resolve(self, choose: Chooser = first_value) -> TrialConfig:
        """One concrete trial. ``choose(path, distribution)`` is asked for each distribution the trial needs,
        in a fixed order, the variant before its knobs: a define-by-run searcher plugs in here directly."""

        def value(path: str, v: Any) -> Any:
            if isinstance(v, Distribution):
                v = choose(path, v)
            if isinstance(v, BaseModel):
                return {k: value(f"{path}.{k}", getattr(v, k)) for k in type(v).model_fields}
            return v

        tree: dict[str, Any] = {"name": self.name}
        for section in SEARCHABLE_SECTIONS:
            if section != "objective":
                tree[section] = value(section, getattr(self, section))
        tree["objective"] = self._resolve_objective(value)
        try:
            return TrialConfig.model_validate(tree)
        except ValidationError as err:  # a combination the per-field checks could not see
            raise SpecError([Problem(self._source or "<spec>", None, _loc_path(e["loc"]), _message(e))
                             for e in err.errors()]) from None

    def _resolve_objective(self, value: Callable[[str, Any], Any]) -> dict[str, Any]:
        objective = self.objective
        variant = value("objective.variant", objective.variant)
        out: dict[str, Any] = {
            name: value(f"objective.{name}", getattr(objective, name))
            for name in ObjectiveConfig.model_fields
            if name not in variants.KNOBS and name != "variant"
        }
        out["variant"] = variant
        owned = variants.knobs_of(variant)
        for knob in variants.KNOBS:
            out[knob] = None
            if knob not in owned:
                continue  # never sampled: a sparse AE has no beta
            for part in variants.parts(variant):
                section = getattr(objective, part.name)
                if section is not None and getattr(section, knob) is not None and knob in part.knobs:
                    out[knob] = value(f"objective.{part.name}.{knob}", getattr(section, knob))
                    break
            else:
                if getattr(objective, knob) is not None:
                    out[knob] = value(f"objective.{knob}", getattr(objective, knob))
                elif owned[knob] is not None:
                    out[knob] = owned[knob]
                else:  # the knob's own type gives the default (the prior: N(0, I))
                    out[knob] = _default_of(ObjectiveConfig.model_fields[knob])
        if out["recon_weight"] is None:
            out["recon_weight"] = variants.default_recon_weight(variant)
        return out

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the choice/grid values a trial can draw, respecting conditional knobs.

        Returns one ``{path: value}`` assignment per point; ``resolve(replay(point))`` builds its trial.
        Raises SpecError when a continuous distribution is drawn (a grid cannot enumerate it).
        """
        points: list[dict[str, Any]] = []

        class Branch(Exception):
            def __init__(self, path: str, options: list[Any]):
                self.path, self.options = path, options

        def explore(assigned: dict[str, Any]) -> None:
            def choose(path: str, dist: Distribution) -> Any:
                if path in assigned:
                    return assigned[path]
                if not isinstance(dist, Choice | Grid):
                    raise SpecError([Problem(self._source or "<spec>", None, path,
                                             f"search.algorithm grid cannot enumerate {_dist_kind_name(dist)}; "
                                             "use grid: or choice:, or algorithm tpe/random")])
                raise Branch(path, dist.options)

            try:
                self.resolve(choose)
            except Branch as branch:
                for option in branch.options:
                    explore({**assigned, branch.path: option})
                return
            points.append(assigned)

        explore({})
        return points


def replay(assignment: dict[str, Any], fallback: Chooser = first_value) -> Chooser:
    """A chooser that answers from a recorded ``{path: value}`` assignment."""
    return lambda path, dist: assignment[path] if path in assignment else fallback(path, dist)


def _default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    if info.annotation is not None:
        base = _base_type(info.annotation)
        if isinstance(base, type) and issubclass(base, BaseModel) and info.default is None:
            return base()
    return info.default


def _dist_kind_name(dist: Distribution) -> str:
    return {Choice: "choice", Grid: "grid", Uniform: "uniform", LogUniform: "loguniform", IntRange: "int"}[
        next(c for c in (Choice, Grid, Uniform, LogUniform, IntRange) if isinstance(dist, c))]


# --------------------------------------------------------------------------------------------------------------
# Loading, with errors that point at the file, line and field.


class Problem:
    """One error in a spec: ``FILE:LINE: dotted.field.path: message``."""

    def __init__(self, file: str, line: int | None, path: str, message: str, column: int | None = None):
        self.file, self.line, self.path, self.message, self.column = file, line, path, message, column

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"


class SpecError(Exception):
    """A spec that cannot run; ``problems`` holds one entry per error, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


def _line_map(node: yaml.Node, problems: list[Problem], file: str) -> dict[tuple, int]:
    """Path tuple -> 1-based line of that key (or sequence item), from the composed YAML node tree."""
    lines: dict[tuple, int] = {(): node.start_mark.line + 1}

    def walk(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in n.value:
                key = key_node.value
                if key in seen:
                    problems.append(Problem(file, key_node.start_mark.line + 1, _loc_path((*path, key)),
                                            "duplicate key"))
                seen.add(key)
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    walk(node, ())
    return lines


def _clean_loc(loc: Iterable[Any]) -> tuple:
    """A pydantic error location as the user's path: union tags stripped."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(_TAG))]
    # The distribution union's tag repeats the key that follows it (loc: ..., 'choice', 'choice', 0).
    return tuple(p for i, p in enumerate(parts)
                 if not (p in DIST_KEYS and i + 1 < len(parts) and parts[i + 1] == p))


def _loc_path(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in _clean_loc(loc)) or "(top level)"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config section class inside a field annotation (through Annotated and unions), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None if issubclass(annotation, Distribution) else annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _keys_at(loc: tuple) -> list[str]:
    """The keys the section at ``loc`` accepts, for 'did you mean' suggestions."""
    model: type[BaseModel] | None = SweepSpec
    for key in loc:
        if model is None or key not in model.model_fields:
            return []
        model = _section_model(model.model_fields[key].annotation)
    return list(model.model_fields) if model is not None else list(DIST_KEYS)


def _message(error: dict[str, Any]) -> str:
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx", {})
    if kind == "extra_forbidden":
        import difflib

        loc = _clean_loc(error["loc"])
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        return "unknown key" + (f"; did you mean {close[0]}?" if close else "")
    if kind == "union_tag_invalid":
        return f"{ctx.get('tag')} is not allowed for this field; use one of: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"a distribution has exactly one of: {', '.join(DIST_KEYS)}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[0].lower() + msg[1:] if msg else kind


def _lookup(data: Any, loc: tuple) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> tuple[str, ...]:
    """Put ``value`` at ``dotted.key`` in the document (creating mappings on the way); returns the key's parts."""
    parts = tuple(key.strip().split("."))
    if not all(parts):
        raise ValueError(f"malformed key {key!r}")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
    return parts


def _apply_override(data: dict[str, Any], override: str) -> tuple[str, ...]:
    """``dotted.key=value`` (value parsed as YAML) into the document; raises ValueError on a malformed one."""
    if "=" not in override:
        raise ValueError(f"--set {override!r}: expected dotted.key=value")
    key, raw = override.split("=", 1)
    try:
        if raw.strip():
            yamlsafe.scan(raw)
        value = yaml.safe_load(raw) if raw.strip() else None
    except yamlsafe.DocumentError as err:
        raise ValueError(f"--set {key}: {err.message}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"--set {override!r}: value is not valid YAML ({err})") from None
    try:
        return _set_dotted(data, key, value)
    except ValueError:
        raise ValueError(f"--set {override!r}: malformed key") from None


def _apply_stage(data: dict[str, Any], stage: str, lines: dict[tuple, int], file: str,
                 overridden: dict[tuple, tuple[int | None, str]], problems: list[Problem]) -> None:
    """Apply the entries of ``stages.<stage>`` (dotted keys -> values) to the document."""
    table = data.get("stages")
    if not isinstance(table, dict) or stage not in table:
        known = ", ".join(table) if isinstance(table, dict) and table else "none defined"
        problems.append(Problem(file, lines.get(("stages",)), "stages", f"no stage {stage!r} (stages: {known})"))
        return
    entries = table[stage]
    if not isinstance(entries, dict):
        problems.append(Problem(file, lines.get(("stages", stage)), f"stages.{stage}",
                                "a stage is a mapping of dotted.key: value overrides"))
        return
    for key, value in entries.items():
        try:
            parts = _set_dotted(data, str(key), copy.deepcopy(value))
        except ValueError as err:
            problems.append(Problem(file, lines.get(("stages", stage, key)), f"stages.{stage}", str(err)))
        else:
            overridden[parts] = (lines.get(("stages", stage, key)), f"from stage {stage}")
    if not any(str(k) == "name" for k in entries):
        # A stage is its own sweep: its own storage directory and MLflow experiment.
        data["name"] = f"{data.get('name')}-{stage}"


def parse_spec(text: str, file: str = "<spec>", overrides: Iterable[str] = (),
               stages: Iterable[str] = ()) -> SweepSpec:
    """Parse and validate a spec document. Raises SpecError with every problem found.

    ``stages``: names under the document's ``stages:`` whose overrides apply, in order, before ``overrides``
    (the ``--set`` strings)."""
    problems: list[Problem] = []
    try:
        yamlsafe.scan(text)  # bounded before anything composes, recurses or copies the document
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([Problem(file, mark.line + 1 if mark else None, "yaml", problem,
                                 column=mark.column + 1 if mark else None)]) from None
    except yamlsafe.DocumentError as err:
        raise SpecError([Problem(file, err.line, err.field, err.message, column=err.column)]) from None
    if node is None or not isinstance(data, dict):
        raise SpecError([Problem(file, 1, "(top level)", "a spec is a mapping with at least a name")])
    lines = _line_map(node, problems, file)
    # Fields set by a stage or --set: (line to blame, where the value came from).
    overridden: dict[tuple, tuple[int | None, str]] = {}
    for stage in stages:
        _apply_stage(data, stage, lines, file, overridden, problems)
    for override in overrides:
        try:
            parts = _apply_override(data, override)
        except ValueError as err:
            problems.append(Problem(file, None, "--set", str(err)))
        else:
            overridden[parts] = (None, "from --set")

    def line_of(loc: tuple) -> int | None:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in overridden:
                return overridden[loc[:cut]][0]
            if loc[:cut] in lines:
                return lines[loc[:cut]]
        return None

    def origin(loc: tuple) -> str:
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in overridden:
                return f" ({overridden[loc[:cut]][1]})"
        return ""

    spec: SweepSpec | None = None
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        for error in err.errors():
            loc = _clean_loc(error["loc"])
            message = _message(error)
            if loc and loc[0] not in SEARCHABLE_SECTIONS and is_distribution_like(_lookup(data, loc)):
                message = f"distributions are not allowed in {loc[0]}; give a fixed value"
            problems.append(Problem(file, line_of(loc), _loc_path(loc) + origin(loc), message))
    if spec is not None:
        for loc, message in _semantic_problems(spec):
            problems.append(Problem(file, line_of(loc), _loc_path(loc) + origin(loc), message))
        if not problems:
            spec._source = file
            try:  # the first trial must build: catches what only the concrete TrialConfig can check
                spec.resolve()
            except SpecError as err:
                problems += [Problem(file, line_of(tuple(p.path.split("."))), p.path, p.message)
                             for p in err.problems]
    if problems:
        raise SpecError(problems)
    assert spec is not None
    spec._source, spec._data = file, data
    spec._locate = lambda loc: (line_of(loc), origin(loc))
    return spec


def load_spec(path: str | Path, overrides: Iterable[str] = (), stages: Iterable[str] = ()) -> SweepSpec:
    """Read and validate a spec file. Raises SpecError (never a bare pydantic or YAML exception)."""
    file = str(path)
    try:
        text = yamlsafe.read_text(path)
    except OSError as err:
        raise SpecError([Problem(file, None, "(file)", err.strerror or str(err))]) from None
    except yamlsafe.DocumentError as err:
        raise SpecError([Problem(file, err.line, err.field, err.message, column=err.column)]) from None
    return parse_spec(text, file, overrides, stages)


def _semantic_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """Checks that span fields: variant knobs given to a variant that does not own them."""
    found: list[tuple[tuple, str]] = []
    objective = spec.objective
    drawn = spec.possible_variants()
    for preset in variants.PRESETS:
        section = getattr(objective, preset.name)
        if section is None:
            continue
        for knob in variants.KNOBS:
            if getattr(section, knob) is not None and knob not in preset.knobs:
                owned = ", ".join(preset.knobs) or "none"
                found.append((("objective", preset.name, knob),
                              f"{knob} is not a knob of variant {preset.name} (its knobs: {owned})"))
    for knob in variants.KNOBS:
        if getattr(objective, knob) is None:
            continue
        if not any(knob in variants.knobs_of(v) for v in drawn):
            owners = [p.name for p in variants.PRESETS if knob in p.knobs]
            found.append((("objective", knob),
                          f"{knob} is not a knob of variant {' or '.join(drawn)} (it belongs to: {', '.join(owners)})"))
    if spec.search.seeds > 1 and spec.search.algorithm in ("tpe", "nsga2"):
        found.append((("search", "seeds"), "seeds > 1 needs algorithm grid or random (a searcher proposes each "
                      "configuration once)"))
    if spec.search.scheduler.metric and spec.search.scheduler.name == "none":
        found.append((("search", "scheduler", "metric"), "a metric is set but no scheduler is chosen"))
    sch, epochs = spec.search.scheduler, spec.train.epochs
    max_epochs = highest(epochs)
    if sch.name != "none" and isinstance(max_epochs, int) and sch.grace_period > max_epochs:
        found.append((("search", "scheduler", "grace_period"),
                      f"grace period {sch.grace_period} is longer than the {max_epochs} epoch(s) a trial trains"))
    found += _scheduler_problems(spec)
    folds, fold = spec.dataset.folds, spec.dataset.fold
    if isinstance(folds, int):
        values = fold.options if isinstance(fold, Choice | Grid) else [fold] if isinstance(fold, int) else []
        if bad := [v for v in values if v >= folds]:
            found.append((("dataset", "fold"), f"fold {bad[0]} is not one of the {folds} folds (0..{folds - 1})"))
    found += _model_problems(spec) + _schedule_problems(spec)
    if spec.search.algorithm == "grid" and not found:  # resolving every point would repeat the problems above
        try:
            spec.grid()
        except SpecError as err:
            found += [((*p.path.split("."),), p.message) for p in err.problems]
    return found


def _options(value: Any) -> list[Any] | None:
    """The values a field can take: its options (choice / grid), [value] when fixed, None when continuous."""
    if isinstance(value, Choice | Grid):
        return value.options
    return None if isinstance(value, Distribution) else [value]


def _model_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """Backbone settings a backbone does not take or cannot combine; classifier-head fields without a head;
    a variant that needs labels on a dataset without them."""
    found: list[tuple[tuple, str]] = []
    model = spec.model
    backbones = _options(model.backbone) or []
    settings = backbone_rules.settings_of(model)
    depth = model.depth
    for backbone in backbones:
        if any(isinstance(v, Distribution) for v in (*settings.values(), depth)):
            # Searched settings: only whether the backbone takes them can be told here; the combination is
            # checked when a trial builds its model.
            problems = backbone_rules.untaken(backbone, settings)
        else:
            problems = backbone_rules.setting_problems(backbone, depth, settings)
        found += [(("model", key), message) for key, message in problems]
    variants_drawn = spec.possible_variants()
    has_head = any("classifier" in p.heads for v in variants_drawn for p in variants.parts(v))
    defaults = ModelConfig()
    for key in ("head_widths", "head_dropout", "head_batchnorm"):
        if not has_head and getattr(model, key) != getattr(defaults, key):
            found.append((("model", key), f"{key} shapes the classifier head, which variant "
                          f"{' or '.join(variants_drawn)} does not have (variants with one: classifier)"))
    if "linear" in (_options(model.output_activation) or []) and "bce" in (_options(spec.objective.recon) or []):
        found.append((("model", "output_activation"), "a linear output is unbounded in training, and a bce "
                      "reconstruction needs probabilities in [0, 1]: use sigmoid or tanh, or recon mse / mae"))
    for name in _options(spec.dataset.name) or []:
        if catalog.labelled(name):
            continue
        needy = [v for v in variants_drawn if any(p.needs_labels for p in variants.parts(v))]
        if needy:
            found.append((("objective", "variant"), f"variant {needy[0]} needs labels; dataset {name} has none"))
    return found


def _schedule_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """An unknown schedule param, a warm-up not shorter than the epochs, for fixed values (searched ones are
    checked on the concrete trial by TrainConfig)."""
    from aesweep import schedules

    sch = spec.train.schedule
    if isinstance(sch, Distribution):
        return []
    epochs = spec.train.epochs
    fewest = lowest(epochs)
    warmup = sch.warmup_epochs if isinstance(sch.warmup_epochs, int) else None
    params = {k: getattr(sch, k) for k in SCHEDULE_PARAMS if getattr(sch, k) is not None}
    found: list[tuple[tuple, str]] = []
    for name in _options(sch.name) or []:
        for key, message in schedules.problems(name, fewest if isinstance(fewest, int) else None, warmup, params):
            if (("train", "schedule", key), message) not in found:
                found.append((("train", "schedule", key), message))
    return found


def scheduler_metrics(spec: SweepSpec) -> dict[str, str]:
    """The metrics (name -> mode) the spec's scheduler ranks trials on: moasha's ``metrics`` (default: the
    per-epoch counterparts of ``search.metrics`` that exist), asha's ``metric`` (default: the first search
    metric); empty without a scheduler. Validation (``_scheduler_problems``) makes sure each is per-epoch."""
    sch, search = spec.search.scheduler, spec.search.metrics
    if sch.name == "moasha":
        if sch.metrics:
            return dict(sch.metrics)
        out: dict[str, str] = {}
        for name, mode in search.items():
            counterpart = per_epoch_counterpart(name)
            if counterpart is not None:
                out.setdefault(counterpart, mode)
        return out
    if sch.name == "asha":
        metric = sch.metric or next(iter(search))
        return {metric: sch.mode or search.get(metric, "min")}
    return {}


def _every_epoch_values(spec: SweepSpec) -> list[Any]:
    every = spec.eval.online_probe_every
    return list(every.options) if isinstance(every, Choice | Grid) else [every]


def _scheduler_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """A scheduler ranks trials at every rung on what they reported at that epoch: each of its metrics must be
    reported every epoch (the online probe's only when it runs every epoch)."""
    sch = spec.search.scheduler
    found: list[tuple[tuple, str]] = []
    if sch.name == "none":
        if sch.metrics:
            found.append((("search", "scheduler", "metrics"), "metrics are set but no scheduler is chosen"))
        return found
    if sch.name == "asha" and sch.metrics:
        found.append((("search", "scheduler", "metrics"),
                      "asha ranks on one metric: give metric and mode (metrics is for moasha)"))
        return found
    if sch.name == "moasha" and (sch.metric or sch.mode):
        key = "metric" if sch.metric else "mode"
        found.append((("search", "scheduler", key),
                      "moasha takes metrics: {name: min|max, ...} (metric and mode are asha's)"))
        return found
    if sch.max_t is not None and sch.grace_period > sch.max_t:
        found.append((("search", "scheduler", "grace_period"),
                      f"grace period {sch.grace_period} is longer than max_t {sch.max_t}"))
    every = _every_epoch_values(spec)
    if sch.name == "moasha" and not sch.metrics:
        missing = [m for m in spec.search.metrics if per_epoch_counterpart(m) is None]
        if missing:
            return [(("search", "metrics", m),
                     f"{m} has no per-epoch counterpart for moasha to rank on; give search.scheduler.metrics "
                     "(per-epoch: val/loss, val/mse, val/psnr, val/probe/knn/acc, ...)") for m in missing]
    for name in scheduler_metrics(spec):
        if sch.metrics:
            loc: tuple = ("search", "scheduler", "metrics", name)
        elif sch.name == "asha" and sch.metric:
            loc = ("search", "scheduler", "metric")
        else:  # defaulted: blame the search metric it stands for
            loc = ("search", "metrics", next((m for m in spec.search.metrics if per_epoch_counterpart(m) == name),
                                             name))
        if name in ONLINE_PROBE_METRICS:
            if any(v != 1 for v in every):
                now = "off" if every == [None] else f"every {', '.join(str(v) for v in every)} epoch(s)"
                found.append((loc, f"{name} comes from the online probe, which runs {now}; a scheduler needs it "
                                   "every epoch: set eval.online_probe_every: 1"))
        elif per_epoch_counterpart(name) != name:
            counterpart = per_epoch_counterpart(name)
            if counterpart:
                found.append((loc, f"{name} is reported once, at the end of a trial: a scheduler needs a metric "
                                   f"reported every epoch; its per-epoch counterpart is {counterpart}"))
            else:
                found.append((loc, f"{name} is not reported every epoch, which a scheduler needs (per-epoch: "
                                   f"{', '.join(PER_EPOCH_METRICS)}, loss/<term>, val/loss/<term>, "
                                   f"{', '.join(ONLINE_PROBE_METRICS)})"))
    return found


__all__ = [
    "Choice", "DatasetConfig", "Distribution", "EvalConfig", "Grid", "IntRange", "LogUniform", "ModelConfig",
    "ObjectiveConfig", "PriorConfig", "ScheduleConfig", "SpecError", "SweepSpec", "TrainConfig", "TrialConfig",
    "Uniform", "first_value", "load_spec", "parse_spec", "per_epoch_counterpart", "replay", "scheduler_metrics",
]
