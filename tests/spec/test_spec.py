"""The sweep spec: errors that point at the file line and field, distributions, conditional variant knobs."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from aesweep.spec.distributions import Choice, Grid, IntRange, LogUniform, Uniform, replay
from aesweep.spec.load import load_spec, parse_spec
from aesweep.spec.problems import SpecError
from aesweep.spec.sweep_spec import SweepSpec
from aesweep.spec.trial import TrialConfig

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml"))


def problems_of(text: str, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(textwrap.dedent(text), "spec.yaml", overrides)
    return [str(p) for p in info.value.problems]


# Each malformed spec with the exact line and field path its error must name, and a word of the message.
MALFORMED = [
    ("unknown key", "name: s\nmodel:\n  latnt_dim: 4\n", "spec.yaml:3: model.latnt_dim: unknown key; did you mean latent_dim?"),
    ("unknown section", "name: s\nmodle: {}\n", "spec.yaml:2: modle: unknown key; did you mean model?"),
    ("wrong type", "name: s\ntrain:\n  epochs: many\n", "spec.yaml:3: train.epochs: input should be a valid integer"),
    ("out of range", "name: s\ntrain:\n  lr: -1\n", "spec.yaml:3: train.lr: input should be greater than 0"),
    ("missing name", "model: {latent_dim: 4}\n", "spec.yaml:1: name: field required"),
    ("lo >= hi", "name: s\ntrain:\n  lr: {uniform: [0.1, 0.01]}\n", "spec.yaml:3: train.lr.uniform: low 0.1 must be below high 0.01"),
    ("loguniform lo <= 0", "name: s\ntrain:\n  weight_decay: {loguniform: [0, 0.1]}\n",
     "spec.yaml:3: train.weight_decay.loguniform: loguniform needs a positive low end, got 0.0"),
    ("int lo >= hi", "name: s\nmodel:\n  latent_dim: {int: [64, 8]}\n", "spec.yaml:3: model.latent_dim.int: low 64 must be below high 8"),
    ("empty choice", "name: s\nmodel:\n  latent_dim: {choice: []}\n", "spec.yaml:3: model.latent_dim.choice: list should have at least 1 item"),
    ("uniform on an int", "name: s\nmodel:\n  latent_dim: {uniform: [8, 64]}\n",
     "spec.yaml:3: model.latent_dim: uniform is not allowed for this field; use one of: 'choice', 'grid', 'int'"),
    ("bad choice item", "name: s\nmodel:\n  latent_dim:\n    choice:\n      - 8\n      - lots\n",
     "spec.yaml:6: model.latent_dim.choice.1: input should be a valid integer"),
    ("two distribution kinds", "name: s\nmodel:\n  latent_dim: {choice: [8], grid: [16]}\n",
     "spec.yaml:3: model.latent_dim: a distribution has exactly one of"),
    ("unknown variant", "name: s\nobjective:\n  variant: vea\n", "spec.yaml:3: objective.variant: unknown variant 'vea'; known: ae, classifier"),
    ("unknown composed variant", "name: s\nobjective:\n  variant: denoising+vea\n", "spec.yaml:3: objective.variant: unknown variant 'vea'"),
    ("unknown dataset", "name: s\ndataset:\n  name: imagenet\n", "spec.yaml:3: dataset.name: unknown dataset 'imagenet'; known: cifar10"),
    ("unknown backbone", "name: s\nmodel:\n  backbone: vit\n", "spec.yaml:3: model.backbone: unknown backbone 'vit'; known: conv"),
    ("knob in the wrong variant section", "name: s\nobjective:\n  variant: sparse\n  sparse:\n    beta: 4\n",
     "spec.yaml:5: objective.sparse.beta: beta is not a knob of variant sparse (its knobs: sparsity)"),
    ("flat knob of another variant", "name: s\nobjective:\n  variant: ae\n  temperature: 0.5\n",
     "spec.yaml:4: objective.temperature: temperature is not a knob of variant ae (it belongs to: contrastive, supcon)"),
    ("augmentation of a one-view variant", "name: s\nobjective:\n  variant: ae\n  augment_pad: 0\n",
     "spec.yaml:4: objective.augment_pad: augment_pad is not a knob of variant ae (it belongs to: contrastive, supcon)"),
    ("negative crop padding", "name: s\nobjective:\n  variant: contrastive\n  contrastive: {augment_pad: -1}\n",
     "spec.yaml:4: objective.contrastive.augment_pad: input should be greater than or equal to 0"),
    ("resized crop of no area", "name: s\nobjective:\n  variant: contrastive\n  contrastive: {augment_scale: 0}\n",
     "spec.yaml:4: objective.contrastive.augment_scale: input should be greater than 0"),
    ("distribution outside a searchable section", "name: s\nsearch:\n  num_samples: {choice: [4, 8]}\n",
     "spec.yaml:3: search.num_samples: distributions are not allowed in search; give a fixed value"),
    ("grid over a continuous range", "name: s\nsearch: {algorithm: grid}\ntrain:\n  lr: {uniform: [0.001, 0.01]}\n",
     "spec.yaml:4: train.lr: search.algorithm grid cannot enumerate uniform"),
    ("duplicate key", "name: s\ntrain: {epochs: 2}\ntrain: {epochs: 3}\n", "spec.yaml:3: train: duplicate key"),
    ("bad sweep name", "name: 'my sweep!'\n", "spec.yaml:1: name: string should match pattern"),
    ("unknown scheduler", "name: s\nsearch:\n  scheduler: hyperband\n", "spec.yaml:3: search.scheduler.name: input should be 'none', 'asha' or 'moasha'"),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_spec_names_line_field_and_problem(text, expected):
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), f"expected {expected!r} in {found}"


def test_yaml_syntax_error_gives_parser_line_and_column():
    found = problems_of("name: s\nmodel: {latent_dim: 4\ntrain: {}\n")
    assert len(found) == 1
    assert found[0] == "spec.yaml:3:6: yaml: expected ',' or '}', but got ':'"


def test_every_problem_is_reported_not_only_the_first():
    found = problems_of("name: s\nmodel:\n  latent_dim: 0\n  width: -2\ntrain:\n  epochs: 0\n")
    assert [p.split(": ")[0] for p in found] == ["spec.yaml:3", "spec.yaml:4", "spec.yaml:6"]


def test_bad_override_names_the_field_and_says_it_came_from_set():
    found = problems_of("name: s\n", overrides=["model.latent_dim=-3"])
    assert found == ["spec.yaml: model.latent_dim (from --set): input should be greater than 0"]


def test_missing_file_is_one_clean_problem(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: (file): No such file")


# --------------------------------------------------------------------------------------------------------------


def test_every_distribution_kind_round_trips():
    spec = parse_spec(textwrap.dedent("""
        name: s
        model:
          latent_dim: {int: [8, 64], log: true}
          width: {uniform: [0.25, 1.0]}
          depth: {grid: [1, 2, 3]}
        train:
          lr: {loguniform: [1.0e-4, 1.0e-2]}
          optimizer: {choice: [adam, sgd]}
    """))
    params = spec.parameters()
    assert params["model.latent_dim"] == IntRange[int](int=(8, 64), log=True)
    assert isinstance(params["model.width"], Uniform) and params["model.width"].uniform == (0.25, 1.0)
    assert isinstance(params["model.depth"], Grid) and params["model.depth"].grid == [1, 2, 3]
    assert isinstance(params["train.lr"], LogUniform) and params["train.lr"].loguniform == (1e-4, 1e-2)
    assert isinstance(params["train.optimizer"], Choice) and params["train.optimizer"].choice == ["adam", "sgd"]
    # Dumped and parsed again, the spec is the same spec.
    again = SweepSpec.model_validate(spec.model_dump(by_alias=True))
    assert again.parameters() == params
    # The default trial takes the first value or the low end, and is a plain TrialConfig.
    trial = spec.resolve()
    assert isinstance(trial, TrialConfig)
    assert (trial.model.latent_dim, trial.model.width, trial.model.depth) == (8, 0.25, 1)
    assert (trial.train.lr, trial.train.optimizer) == (1e-4, "adam")


def test_trial_config_never_holds_a_distribution():
    with pytest.raises(ValidationError):
        TrialConfig.model_validate({"model": {"latent_dim": {"choice": [8, 16]}}})


def test_chooser_values_are_validated_against_the_field():
    spec = parse_spec("name: s\nmodel:\n  latent_dim: {int: [8, 64]}\n")
    with pytest.raises(SpecError, match="model.latent_dim"):
        spec.resolve(lambda path, dist: -5)


CONDITIONAL = """
name: s
objective:
  variant: {choice: [ae, sparse, vae, denoising+vae]}
  sparse: {sparsity: {loguniform: [1.0e-5, 1.0e-2]}}
  vae: {beta: {uniform: [0.5, 4.0]}}
  noise_sigma: {choice: [0.1, 0.3]}
"""


@pytest.mark.parametrize("variant, asked", [
    ("ae", ["objective.variant"]),
    ("sparse", ["objective.variant", "objective.sparse.sparsity"]),
    ("vae", ["objective.variant", "objective.vae.beta"]),
    ("denoising+vae", ["objective.variant", "objective.noise_sigma", "objective.vae.beta"]),
])
def test_only_the_drawn_variants_knobs_are_asked_for(variant, asked):
    spec = parse_spec(CONDITIONAL)
    seen = []

    def choose(path, dist):
        seen.append(path)
        return variant if path == "objective.variant" else dist.first()

    trial = spec.resolve(choose)
    assert seen == asked
    assert trial.objective.variant == variant
    assert (trial.objective.beta is not None) == ("vae" in variant)
    assert (trial.objective.sparsity is not None) == (variant == "sparse")
    assert (trial.objective.noise_sigma is not None) == ("denoising" in variant)


def test_variant_defaults_fill_unsampled_knobs_and_recon_weight():
    spec = parse_spec("name: s\nobjective:\n  variant: {choice: [vae, contrastive, supcon, mmd]}\n")
    by_variant = {v: spec.resolve(replay({"objective.variant": v})).objective for v in ["vae", "contrastive", "supcon", "mmd"]}
    assert by_variant["vae"].beta == 1.0 and by_variant["vae"].prior.mean == 0.0 and by_variant["vae"].recon_weight == 1.0
    assert by_variant["contrastive"].temperature == 0.5 and by_variant["contrastive"].recon_weight == 0.0
    assert by_variant["supcon"].temperature == 0.1
    assert by_variant["mmd"].latent_noise == 0.0 and by_variant["mmd"].beta == 1.0


def test_per_variant_section_wins_over_the_flat_knob():
    spec = parse_spec("name: s\nobjective:\n  variant: {choice: [vae, mmd]}\n  beta: 2.0\n  vae: {beta: 0.65}\n")
    assert spec.resolve(replay({"objective.variant": "vae"})).objective.beta == 0.65
    assert spec.resolve(replay({"objective.variant": "mmd"})).objective.beta == 2.0


def test_grid_enumerates_the_conditional_product():
    spec = parse_spec(textwrap.dedent("""
        name: s
        search: {algorithm: grid}
        model: {latent_dim: {grid: [16, 32, 64]}}
        objective:
          variant: {grid: [ae, sparse, vae]}
          sparse: {sparsity: {grid: [1.0e-4, 1.0e-3]}}
    """))
    points = spec.grid()
    # 3 latent sizes x (ae + 2 sparse + vae) = 12, with no sparsity value for ae or vae
    assert len(points) == 12
    trials = [spec.resolve(replay(p)) for p in points]
    combos = {(t.model.latent_dim, t.objective.variant, t.objective.sparsity) for t in trials}
    assert len(combos) == 12
    assert all((t.objective.sparsity is None) == (t.objective.variant != "sparse") for t in trials)


def test_a_distribution_over_whole_priors():
    spec = parse_spec(textwrap.dedent("""
        name: s
        objective:
          variant: vae
          prior:
            grid:
              - {mean: 0, std: 1}
              - {mean: [5, 10], std: [1, 1]}
        search: {algorithm: grid}
    """))
    priors = [spec.resolve(replay(p)).objective.prior for p in spec.grid()]
    assert [p.mean for p in priors] == [0.0, [5.0, 10.0]]


def test_overrides_change_the_trial_and_the_hash():
    base = parse_spec("name: s\nmodel: {latent_dim: 8}\n")
    changed = parse_spec("name: s\nmodel: {latent_dim: 8}\n", overrides=["model.latent_dim=64", "train.epochs=1"])
    trial = changed.resolve()
    assert (trial.model.latent_dim, trial.train.epochs) == (64, 1)
    assert base.hash != changed.hash


def test_flat_params_use_dots_and_skip_unused_knobs():
    flat = parse_spec("name: s\nobjective: {variant: sparse}\n").resolve().flat()
    assert flat["objective.variant"] == "sparse" and flat["objective.sparsity"] == 1e-4
    assert "objective.beta" not in flat
    assert flat["train.early_stopping.patience"] == 5


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_shipped_sweep_validates(path):
    spec = load_spec(path)
    assert spec.resolve().name == spec.name


STAGED = """name: staged
dataset: {name: shapes, folds: 5}
model: {latent_dim: {grid: [2, 4]}}
search: {algorithm: grid}
stages:
  wide:
    model.latent_dim: {grid: [2, 4, 8]}
    search.max_concurrent: 3
  bad:
    dataset.fold: 7
  named:
    name: other
"""


def test_stages_apply_their_overrides_and_name_the_sweep():
    base = parse_spec(STAGED, "s.yaml")
    assert base.name == "staged" and len(base.grid()) == 2 and set(base.stages) == {"wide", "bad", "named"}
    wide = parse_spec(STAGED, "s.yaml", stages=["wide"])
    assert wide.name == "staged-wide" and len(wide.grid()) == 3 and wide.search.max_concurrent == 3
    assert parse_spec(STAGED, "s.yaml", stages=["named"]).name == "other"
    # --set applies after the stages.
    assert parse_spec(STAGED, "s.yaml", ["search.max_concurrent=1"], stages=["wide"]).search.max_concurrent == 1


def test_stage_errors_name_the_stage_and_its_line():
    with pytest.raises(SpecError) as err:
        parse_spec(STAGED, "s.yaml", stages=["bad"])
    assert [str(p) for p in err.value.problems] == [
        "s.yaml:10: dataset.fold (from stage bad): fold 7 is not one of the 5 folds (0..4)"]
    with pytest.raises(SpecError) as err:
        parse_spec(STAGED, "s.yaml", stages=["nope"])
    assert str(err.value.problems[0]) == "s.yaml:5: stages: no stage 'nope' (stages: wide, bad, named)"


# Misuse of the model and training fields of issue 13: each names its line and field.
MISUSED = [
    ("widths on conv", "name: s\nmodel:\n  backbone: conv\n  widths: [256, 128]\n",
     "spec.yaml:4: model.widths: widths is not a setting of backbone conv (its settings: channels, dropout"),
    ("channels on mlp", "name: s\nmodel:\n  backbone: mlp\n  channels: [32, 64]\n",
     "spec.yaml:4: model.channels: channels is not a setting of backbone mlp"),
    ("skips on resnet", "name: s\nmodel:\n  backbone: resnet\n  skip_connections: true\n",
     "spec.yaml:4: model.skip_connections: skip_connections is not a setting of backbone resnet"),
    ("widths on a searched conv", "name: s\nmodel:\n  backbone: {choice: [mlp, conv]}\n  widths: [64]\n",
     "spec.yaml:4: model.widths: widths is not a setting of backbone conv"),
    ("strides without channels", "name: s\nmodel:\n  strides: [2, 2, 2]\n",
     "spec.yaml:3: model.strides: strides needs channels"),
    ("strides length", "name: s\nmodel:\n  channels: [8, 16]\n  strides: [2]\n",
     "spec.yaml:4: model.strides: 1 strides for 2 channels"),
    ("depth with channels", "name: s\nmodel:\n  depth: 2\n  channels: [8, 16]\n",
     "spec.yaml:3: model.depth: depth and channels are both set"),
    ("depth with widths", "name: s\nmodel:\n  backbone: mlp\n  depth: 3\n  widths: [64]\n",
     "spec.yaml:4: model.depth: depth and widths are both set"),
    ("dropout range", "name: s\nmodel:\n  dropout: 1.5\n", "spec.yaml:3: model.dropout: input should be less than 1"),
    ("unknown output activation", "name: s\nmodel:\n  output_activation: relu\n",
     "spec.yaml:3: model.output_activation: input should be 'sigmoid', 'tanh' or 'linear'"),
    ("linear output under bce", "name: s\nobjective: {variant: vae, recon: bce}\nmodel:\n  output_activation: linear\n",
     "spec.yaml:4: model.output_activation: a linear output is unbounded in training, and a bce reconstruction"),
    ("unknown init", "name: s\nmodel:\n  init: xavier\n",
     "spec.yaml:3: model.init: input should be 'torch' or 'lecun_normal'"),
    ("head without classifier", "name: s\nobjective: {variant: ae}\nmodel:\n  head_widths: [64]\n",
     "spec.yaml:4: model.head_widths: head_widths shapes the classifier head, which variant ae does not have"),
    ("unknown schedule", "name: s\ntrain:\n  schedule: {name: cosin}\n",
     "spec.yaml:3: train.schedule.name: unknown lr schedule 'cosin'; known: constant, cosine, onecycle, step"),
    ("warmup longer than epochs", "name: s\ntrain:\n  epochs: 5\n  schedule:\n    name: cosine\n"
     "    warmup_epochs: 5\n",
     "spec.yaml:6: train.schedule.warmup_epochs: a warm-up of 5 epoch(s) leaves none of the 5 epoch(s)"),
    ("warmup against searched epochs", "name: s\ntrain:\n  epochs: {grid: [3, 20]}\n"
     "  schedule: {name: cosine, warmup_epochs: 4}\n",
     "spec.yaml:4: train.schedule.warmup_epochs: a warm-up of 4 epoch(s) leaves none of the 3"),
    ("param of another schedule", "name: s\ntrain:\n  schedule:\n    name: cosine\n    gamma: 0.5\n",
     "spec.yaml:5: train.schedule.gamma: gamma is not a param of schedule cosine (its params: min_lr)"),
    ("onecycle without warm-up", "name: s\ntrain:\n  schedule: {name: onecycle}\n",
     "spec.yaml:3: train.schedule.warmup_epochs: schedule onecycle needs warmup_epochs >= 1"),
    ("labels on frey_face", "name: s\ndataset: {name: frey_face}\nobjective:\n  variant: classifier\n",
     "spec.yaml:4: objective.variant: variant classifier needs labels; dataset frey_face has none"),
    ("softmax_mae on ae", "name: s\nobjective:\n  softmax_mae_weight: 1.0\n",
     "spec.yaml:3: objective.softmax_mae_weight: softmax_mae_weight is not a knob of variant ae"),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in MISUSED], ids=[m[0] for m in MISUSED])
def test_misused_model_and_train_fields_name_line_and_field(text, expected):
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), f"expected {expected!r} in {found}"


def test_new_model_and_train_fields_reach_the_trial():
    trial = parse_spec(textwrap.dedent("""\
        name: s
        model: {backbone: mlp, widths: [256, 128], decoder_widths: [256], dropout: 0.2, head_widths: [64],
                head_dropout: 0.3}
        objective: {variant: classifier, softmax_mae_weight: 0.5}
        train: {epochs: 20, schedule: {name: step, warmup_epochs: 2, step_epochs: 5, gamma: 0.5}}
        """)).resolve()
    assert trial.model.widths == [256, 128] and trial.model.head_widths == [64] and trial.model.dropout == 0.2
    assert trial.objective.softmax_mae_weight == 0.5
    assert trial.train.schedule.params() == {"step_epochs": 5, "gamma": 0.5}
    assert trial.flat()["train.schedule.name"] == "step"


def test_a_drawn_warmup_too_long_fails_on_the_concrete_trial():
    spec = parse_spec("name: s\ntrain:\n  epochs: {grid: [3, 20]}\n  schedule: {name: cosine}\n")
    with pytest.raises(ValidationError, match="warm-up of 5 epoch"):
        TrialConfig.model_validate({"train": {"epochs": 3, "schedule": {"name": "cosine", "warmup_epochs": 5}}})
    assert spec.resolve().train.epochs == 3


# --------------------------------------------------------------------------------------------------------------
# The declarations: built-in names and their metadata read from source without importing the registering modules,
# equal to what those modules register when they run.


def test_declarations_read_from_source_equal_the_registrations():
    import subprocess
    import sys

    from aesweep import registry
    from aesweep.models import model, nets
    from aesweep.spec import backbones, trial

    # Read in a fresh interpreter, before anything registers: the static reader alone must find every name.
    code = ("import json, sys; from aesweep import registry; "
            "out = {k: registry.declared(r) for k, r in registry.ALL.items()}; "
            "assert 'torch' not in sys.modules; print(json.dumps(out))")
    declared = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                         check=True).stdout)
    registry.load_all()
    for key, reg in registry.ALL.items():
        assert list(declared[key]) == sorted(declared[key], key=list(declared[key]).index)
        assert set(declared[key]) == set(reg.names()), key
        # JSON turns tuples into lists; the metadata is equal otherwise.
        assert declared[key] == json.loads(json.dumps({n: reg.meta(n) for n in reg.names()})), key
    assert declared["datasets"]["frey_face"] == {"shape": [1, 28, 20], "labelled": False}
    # The spec lists figures in their source order (eval.figures' type is built from it).
    assert list(declared["figures"])[:2] == ["reconstructions", "latent_pca"]
    for name, rules in backbones.BUILTIN.items():  # nets.py's factories take their rules from the table
        factory = registry.BACKBONES.get(name)
        assert (factory.settings, factory.check) == (rules.settings, rules.check), name
    # The spec's model.output_activation and model.init accept exactly what nets and model.initialise build.
    assert tuple(nets.OUTPUT_ACTIVATIONS) == trial.OUTPUT_ACTIVATIONS
    assert model.INIT_SCHEMES is trial.INIT_SCHEMES


def test_a_declaration_with_metadata_that_is_not_a_literal_cannot_be_read(tmp_path, monkeypatch):
    # The reader never runs the home module: a metadata value it cannot evaluate is an error, not a silent skip.
    from aesweep import registry

    home = tmp_path / "aesweep" / "plugin.py"
    home.parent.mkdir()
    home.write_text('@WIDGETS.register("a", shape=(1, 2, 3))\ndef a(): ...\n\n'
                    'WIDGETS.add("b", object(), "doc b", labelled=False)\n'
                    'OTHER.register("c")\n'
                    '@WIDGETS.register("d", shape=compute())\ndef d(): ...\n')
    monkeypatch.setattr(registry, "PACKAGE_DIR", tmp_path / "aesweep")
    widgets = registry.Registry("widget", "aesweep.plugin", "WIDGETS")
    with pytest.raises(ValueError):
        registry.declared(widgets)
    home.write_text(home.read_text().replace("shape=compute()", "shape=(4, 4, 4)"))
    assert registry.declared(widgets) == {"a": {"shape": (1, 2, 3)}, "b": {"labelled": False},
                                          "d": {"shape": (4, 4, 4)}}


def test_a_name_registered_elsewhere_still_validates(monkeypatch):
    from aesweep import registry

    # A plugin registers through the public decorator; the registries are restored afterwards.
    for reg in (registry.DATASETS, registry.METRICS):
        for table in ("_items", "_docs", "_meta"):
            monkeypatch.setattr(reg, table, dict(getattr(reg, table)))
    registry.DATASETS.register("plugin_faces", shape=(1, 8, 8))(lambda **_: None)
    registry.METRICS.register("plugin_metric")(lambda *_: None)
    spec = parse_spec("name: s\ndataset: {name: plugin_faces}\neval: {metrics: [mse, plugin_metric]}\n", "s.yaml")
    assert spec.dataset.name == "plugin_faces"
    found = problems_of("name: s\neval: {metrics: [nope]}\n")
    assert found == [f"spec.yaml:2: eval.metrics: unknown metric 'nope'; known: {', '.join(registry.METRICS.names())}"]
    assert "plugin_metric" in found[0]


def test_validating_builtin_names_imports_neither_torch_nor_sklearn():
    import subprocess
    import sys

    code = ("import sys; from aesweep.spec.load import load_spec; "
            "[load_spec(p) for p in sys.argv[1:]]; "
            "print(sorted(m for m in ('torch', 'sklearn', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *map(str, SWEEPS)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"


FINDINGS = sorted((Path(__file__).resolve().parents[2] / "sweeps" / "findings").glob("*.yaml"))


@pytest.mark.parametrize("path", FINDINGS, ids=lambda p: p.name)
def test_every_shipped_findings_file_names_fields_its_sweep_has(path):
    from aesweep.spec.findings import findings_beside, load_findings

    sweep = path.parent.parent / path.name
    assert sweep.is_file(), f"findings/{path.name} belongs to no sweep file"
    assert findings_beside(sweep) == path  # where `aesweep report` looks for it
    trial = parse_spec(sweep.read_text(), str(sweep)).resolve().model_dump()

    def has(dotted: str) -> bool:
        node = trial
        for part in dotted.split("."):
            if node is None:  # a section this default trial leaves unset (a VAE's prior on an AE)
                return True
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    for claim in load_findings(path).claims:
        params = [*claim.where, *claim.a.where, *(claim.b.where if claim.b else {})]
        params += [p for p in (claim.per, claim.along) if p]
        assert all(has(p) for p in params), (claim.id, [p for p in params if not has(p)])
