"""Checks that span fields, made after each field is valid on its own: variant knobs on a variant that does
not own them, backbone size rules, schedules, the scheduler's metrics, sample quality's decoder and labels.
"""
from __future__ import annotations

from typing import Any

from aesweep import registry
from aesweep.spec import backbones, schedules, variants
from aesweep.spec.distributions import Choice, Distribution, Grid, highest, lowest
from aesweep.spec.problems import SpecError
from aesweep.spec.sweep_spec import ONLINE_PROBE_METRICS, PER_EPOCH_METRICS, SweepSpec, per_epoch_counterpart
from aesweep.spec.trial import SCHEDULE_PARAMS, ModelConfig

# --------------------------------------------------------------------------------------------------------------

def semantic_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
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
    found += _sample_quality_problems(spec)
    found += _family_problems(spec)
    found += _disentanglement_problems(spec)
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
    drawn_backbones = _options(model.backbone) or []
    settings = backbones.settings_of(model)
    depth = model.depth
    for backbone in drawn_backbones:
        if any(isinstance(v, Distribution) for v in (*settings.values(), depth)):
            # Searched settings: only whether the backbone takes them can be told here; the combination is
            # checked when a trial builds its model.
            problems = backbones.untaken(backbone, settings)
        else:
            problems = backbones.setting_problems(backbone, depth, settings)
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
        if registry.meta(registry.DATASETS, name).get("labelled", True):
            continue
        needy = [v for v in variants_drawn if any(p.needs_labels for p in variants.parts(v))]
        if needy:
            found.append((("objective", "variant"), f"variant {needy[0]} needs labels; dataset {name} has none"))
    return found


def _trains_no_decoder(spec: SweepSpec, variant: str) -> str | None:
    """Why ``variant`` has no decoder to sample from (None when it has one, or when a searched recon weight
    leaves it open): a baseline that does not reconstruct, or a recon weight of 0 on every value it can take."""
    presets = variants.parts(variant)
    if presets[0].fit is not None:
        return None if presets[0].reconstructs else f"variant {variant} has no decoder"
    weights = _options(spec.objective.recon_weight)
    if weights is None:
        return None
    if all((variants.default_recon_weight(variant) if w is None else w) == 0 for w in weights):
        return f"variant {variant} trains no decoder (recon weight 0; set objective.recon_weight > 0)"
    return None


def _sample_quality_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """eval.sample_quality on a variant without a decoder, a classifier extractor on a dataset without labels,
    gmm_components without the gmm density, prdc with no more samples than neighbours."""
    sq = spec.eval.sample_quality
    if sq is None or isinstance(sq, Distribution):
        return []
    found: list[tuple[tuple, str]] = []
    for variant in spec.possible_variants():
        if why := _trains_no_decoder(spec, variant):
            found.append((("eval", "sample_quality"), f"sample quality decodes latent samples, and {why}"))
    for features in _options(sq.features) or []:
        if not registry.meta(registry.SAMPLE_FEATURES, features).get("needs_labels"):
            continue
        for name in _options(spec.dataset.name) or []:
            if not registry.meta(registry.DATASETS, name).get("labelled", True):
                found.append((("eval", "sample_quality", "features"),
                              f"the {features} extractor is trained on labels; dataset {name} has none "
                              "(use pixels or inception)"))
    densities = _options(sq.latent_density)
    if sq.gmm_components is not None and densities is not None and "gmm" not in densities:
        found.append((("eval", "sample_quality", "gmm_components"),
                      "gmm_components is set but latent_density is not gmm"))
    fewest, k = lowest(spec.eval.gen_samples), highest(sq.k)
    uses_prdc = any("prdc" in metrics for metrics in _options(sq.metrics) or [])
    if uses_prdc and isinstance(fewest, int) and isinstance(k, int) and fewest <= k:
        found.append((("eval", "gen_samples"), f"prdc's k = {k} nearest neighbours need more than {k} samples, "
                                               f"got gen_samples {fewest}"))
    return found


def _knob_options(spec: SweepSpec, part: str, knob: str) -> tuple[tuple, list[Any] | None]:
    """Where a variant part's knob is set (its own section first, then the objective) and the values it can
    take there (None: searched over a continuous range); an unset knob gives its preset default."""
    section = getattr(spec.objective, part)
    if section is not None and getattr(section, knob) is not None:
        return ("objective", part, knob), _options(getattr(section, knob))
    if getattr(spec.objective, knob) is not None:
        return ("objective", knob), _options(getattr(spec.objective, knob))
    return ("objective", "variant"), [variants.VARIANTS.get(part).knobs.get(knob)]


def _family_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """A knob with no default left unset (FactorVAE's discriminator); a VQ code size that does not divide the
    latent size; an IWAE that cannot decode its samples as trained (skip connections, a mixed recon)."""
    found: list[tuple[tuple, str]] = []
    for variant in spec.possible_variants():
        for part in variants.parts(variant):
            for knob in sorted(part.required):
                where, values = _knob_options(spec, part.name, knob)
                if values is not None and None in values:
                    found.append((where, f"variant {part.name} needs objective.{knob} (no default): e.g. "
                                  f"{knob}: {{widths: [1000, 1000, 1000, 1000, 1000], lr: 1.0e-4}}"))
            if part.bottleneck == "vector_quantized":
                where, values = _knob_options(spec, part.name, "code_dim")
                for latent in _options(spec.model.latent_dim) or []:
                    bad = [c for c in values or [] if c is not None and isinstance(latent, int) and latent % c]
                    if bad:
                        found.append((where, f"code_dim {bad[0]} does not divide latent_dim {latent} "
                                      "(z is cut into latent_dim / code_dim code vectors)"))
                        break
            if part.name == "iwae":
                if True in (_options(spec.model.skip_connections) or []):
                    found.append((("model", "skip_connections"), "iwae decodes k samples of z alone, without the "
                                  "encoder maps a skip-connection decoder needs"))
                if "mse+mae" in (_options(spec.objective.recon) or []):
                    found.append((("objective", "recon"), "iwae needs one likelihood: recon mse, bce or mae"))
    return list(dict.fromkeys(found))


def _disentanglement_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """eval.disentanglement on a dataset without generative factors (the measures compare codes with them); a
    dataset declares them with ``factors=True`` (registry.declared reads it without importing torch)."""
    found: list[tuple[tuple, str]] = []
    for field in ("disentanglement", "online_disentanglement"):
        if not any(_options(getattr(spec.eval, field)) or []):
            continue
        for name in _options(spec.dataset.name) or []:
            if not registry.meta(registry.DATASETS, name).get("factors", False):
                with_factors = [n for n, m in registry.declared(registry.DATASETS).items() if m.get("factors")]
                found.append((("eval", field), f"disentanglement measures need a dataset with known generative "
                              f"factors; dataset {name} has none (with factors: {', '.join(with_factors)})"))
    return found


def _schedule_problems(spec: SweepSpec) -> list[tuple[tuple, str]]:
    """An unknown schedule param, a warm-up not shorter than the epochs, for fixed values (searched ones are
    checked on the concrete trial by TrainConfig)."""

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

