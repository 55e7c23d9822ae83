"""The sweep file as a model: SweepSpec (searchable sections plus the sweep-level search, scheduler, resources
and tracking sections, never searched) and its resolution into TrialConfigs.

Knobs that belong to one variant (beta for vae/mmd, sparsity for sparse, ...) may be given flat in ``objective``
or per variant (``objective.vae.beta``); ``SweepSpec.resolve`` decides the variant first and then asks only for
the knobs of the variant drawn, so a define-by-run searcher never samples beta for a sparse AE.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from aesweep.spec import variants
from aesweep.spec.distributions import Choice, Chooser, Distribution, Grid, first_value, kind_name
from aesweep.spec.problems import Problem, SpecError, error_message, loc_path
from aesweep.spec.searchable import (
    SearchableDataset,
    SearchableEval,
    SearchableModel,
    SearchableObjective,
    SearchableTrain,
    _base_type,
)
from aesweep.spec.trial import ObjectiveConfig, PositiveInt, Strict, TrialConfig

# --------------------------------------------------------------------------------------------------------------



# --------------------------------------------------------------------------------------------------------------
# Sweep-level sections: never searched.

Metric = Annotated[str, Field(min_length=1)]


class SchedulerConfig(Strict):
    """Early stopping across trials: ``asha`` on one per-epoch metric, ``moasha`` on several (aesweep.service.moasha)."""

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
# Reported by the online probe (eval.online_probe_every): its probes, and eval.online_disentanglement's measures.
ONLINE_PROBE_METRICS = ("val/probe/knn/acc", "val/probe/logreg/acc", "val/dis/mig", "val/dis/modularity")
# A final metric -> the per-epoch metric that measures the same thing on the validation split.
PER_EPOCH_COUNTERPARTS = {"test/loss": "val/loss", "test/mse": "val/mse", "test/psnr": "val/psnr",
                          "probe/knn/acc": "val/probe/knn/acc", "probe/logreg/acc": "val/probe/logreg/acc",
                          "dis/mig": "val/dis/mig", "dis/modularity": "val/dis/modularity"}


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



# --------------------------------------------------------------------------------------------------------------
# The file.



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
        return Problem(self._source or "<spec>", line, loc_path(loc) + origin, message)

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
            raise SpecError([Problem(self._source or "<spec>", None, loc_path(e["loc"]), error_message(e, SweepSpec))
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
                                             f"search.algorithm grid cannot enumerate {kind_name(dist)}; "
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




def _default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    if info.annotation is not None:
        base = _base_type(info.annotation)
        if isinstance(base, type) and issubclass(base, BaseModel) and info.default is None:
            return base()
    return info.default



