"""Report tables and loss curves on a real MLflow store (sqlite) whose runs this test logs itself, without Ray:
validation values beside test values, parameter counts (as metrics or as params), one loss-curve panel per
configuration read from the metric histories."""
from __future__ import annotations

import matplotlib.image as mpimg
import pandas as pd
import pytest
from mlflow import MlflowClient

from aesweep.report import assemble, tables
from aesweep.report import curves as report_curves
from aesweep.report import record as record_mod
from aesweep.service import tracking
from aesweep.spec.load import parse_spec

SPEC = """
name: hand
model: {backbone: mlp, latent_dim: {grid: [2, 8]}}
objective: {variant: {grid: [ae, vae]}}
search: {algorithm: grid, metrics: {test/mse: min}, seeds: 2}
"""
# (variant, latent) -> parameter count; the other helper's trials log model/params*, here by hand.
PARAMS = {("ae", 2): 1_100_668, ("ae", 8): 1_104_000, ("vae", 2): 1_101_194, ("vae", 8): 1_107_000}


def _curve(variant: str, latent: int, seed: int, epoch: int) -> tuple[float, float]:
    base = (1.0 if variant == "ae" else 1.3) / latent + 0.01 * seed
    return base / epoch, base / epoch + 0.002 * epoch  # train, val (val rises late: overfitting)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    experiment = c.create_experiment("hand", artifact_location=str(root / "artifacts"))
    parent = c.create_run(experiment, tags={tracking.SWEEP_TAG: "hand"}, run_name="hand").info.run_id
    truth = []
    for variant in ("ae", "vae"):
        for latent in (2, 8):
            for seed in (0, 1):
                run = c.create_run(experiment, tags={"mlflow.parentRunId": parent,
                                                     tracking.TRIAL_TAG: f"{variant}-{latent}-{seed}"}).info.run_id
                params = {"objective.variant": variant, "model.latent_dim": str(latent), "train.seed": str(seed),
                          "model.backbone": "mlp"}
                if variant == "vae":  # one family logs the encoder count as a param: tolerated
                    params["model/params/encoder"] = str(PARAMS[(variant, latent)] // 2)
                for key, value in params.items():
                    c.log_param(run, key, value)
                for epoch in range(1, 6):
                    train, val = _curve(variant, latent, seed, epoch)
                    c.log_metric(run, "train/loss", train, step=epoch)
                    c.log_metric(run, "val/loss", val, step=epoch)
                    c.log_metric(run, "val/mse", val / 2, step=epoch)
                test_mse = _curve(variant, latent, seed, 5)[1] / 2 + 0.001
                c.log_metric(run, "test/mse", test_mse, step=5)
                c.log_metric(run, "test/loss", 2 * test_mse, step=5)
                c.log_metric(run, "model/params", PARAMS[(variant, latent)])
                c.set_terminated(run, "FINISHED")
                truth.append({"variant": variant, "latent": latent, "seed": seed, "run": run,
                              "val/mse": _curve(variant, latent, seed, 5)[1] / 2, "test/mse": test_mse})
    record = record_mod.load_record(uri, parent, parse_spec(SPEC, "hand.yaml"))
    return record, pd.DataFrame(truth)


def test_validation_values_sit_beside_the_test_values(store, tmp_path):
    record, truth = store
    # Counts are numbers to tabulate, not configuration: the varied params stay variant and latent size.
    assert record.varied == ["objective.variant", "model.latent_dim"]
    assert "model/params/encoder" in record.metric_columns and "model/params" in record.metric_columns
    table = tables.val_test_table(record)
    assert list(table.means.index.names) == ["variant", "measure"]
    assert {lv for _, lv in table.means.index} == {"loss (test)", "loss (val)", "mse (test)", "mse (val)"}
    for variant in ("ae", "vae"):
        for latent in (2, 8):
            rows = truth[(truth.variant == variant) & (truth.latent == latent)]
            assert table.means.at[(variant, "mse (val)"), latent] == pytest.approx(rows["val/mse"].mean())
            assert table.means.at[(variant, "mse (test)"), latent] == pytest.approx(rows["test/mse"].mean())
    report = assemble.make_report(record, tmp_path / "out", log=False)
    md = (tmp_path / "out" / "tables.md").read_text()
    section = md.split("### Validation (last epoch) and test values")[1].split("###")[0]
    assert "| ae | mse (val) |" in section and "| ae | mse (test) |" in section
    assert (tmp_path / "out" / "val_test.csv") in report.files


def test_parameter_counts_are_tabulated_as_integers(store, tmp_path):
    record, _ = store
    table = tables.params_table(record)
    assert {lv for _, lv in table.means.index} == {"total", "encoder"}
    for (variant, latent), count in PARAMS.items():
        assert table.means.at[(variant, "total"), latent] == count
        assert table.cells.at[(variant, "total"), latent] == f"{count:,}"  # not 1.101e+06, and never bold
    assert table.cells.at[("vae", "encoder"), 2] == f"{PARAMS[('vae', 2)] // 2:,}"
    assert ("ae", "encoder") not in table.means.index  # the ae runs did not log it
    # Without any count the table is simply absent (the report does not depend on the trials logging one).
    bare = record_mod.SweepRecord(record.name, record.uri, record.parent_run_id, record.experiment_id, record.spec,
                           record.frame, record.param_columns,
                           [m for m in record.metric_columns if not m.startswith("model/params")])
    assert tables.params_table(bare) is None
    assert "params" not in [t.name for t in tables.all_tables(bare)]


def test_a_one_epoch_loss_curve_is_drawn_as_a_visible_point():
    """A fitted baseline logs its loss once: its panel must show that value, not an empty axis."""
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    report_curves._draw(ax, [{"train/loss": [(1, 0.03)], "val/loss": [(1, 0.027)]},
                             {"train/loss": [(1, 0.02), (2, 0.01)]}])
    markers = {(tuple(line.get_xdata()), line.get_marker()) for line in ax.get_lines()}
    assert markers == {((1,), "o"), ((1, 2), "None")}
    baseline = Figure().subplots()
    report_curves._draw(baseline, [{"val/loss": [(1, 0.027)]}])
    assert list(baseline.get_xticks()) == [1]  # one epoch, one tick (not 0.95 ... 1.05)


def test_loss_curves_are_read_from_mlflow_one_panel_per_configuration(store, tmp_path):
    record, truth = store
    run = truth.iloc[0]
    histories = report_curves.metric_histories(record, [run["run"]])
    train = histories[run["run"]]["train/loss"]
    assert [s for s, _ in train] == [1, 2, 3, 4, 5]
    assert [v for _, v in train] == pytest.approx([_curve(run["variant"], run["latent"], run["seed"], e)[0]
                                                   for e in range(1, 6)])
    paths = report_curves.plot_loss_curves(record, tmp_path)
    assert paths == [tmp_path / "loss_curves.png"]
    pixels = mpimg.imread(paths[0])
    assert pixels.shape[0] > 200 and pixels.std() > 0.05
    # One panel per configuration (4: variant x latent; the two seeds share a panel).
    report = assemble.make_report(record, tmp_path / "out", log=False)
    assert (tmp_path / "out" / "plots" / "loss_curves.png") in report.files
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "(plots/loss_curves.png)" in summary
    # More configurations than fit one file: the panels continue on loss_curves_2.png.
    many = report_curves.CONFIGS_PER_FILE
    try:
        report_curves.CONFIGS_PER_FILE = 3
        assert [p.name for p in report_curves.plot_loss_curves(record, tmp_path)] == ["loss_curves.png",
                                                                                       "loss_curves_2.png"]
    finally:
        report_curves.CONFIGS_PER_FILE = many


def test_the_best_trials_figures_are_copied_into_the_report(tmp_path):
    """A study's figures are drawn per trial (MLflow figures/*.png): the report shows the best trial's."""
    from matplotlib.figure import Figure

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    experiment = c.create_experiment("figs", artifact_location=str(tmp_path / "artifacts"))
    parent = c.create_run(experiment, tags={tracking.SWEEP_TAG: "figs"}, run_name="figs").info.run_id
    drawn = {}
    for variant, mse in (("ae", 0.01), ("vae", 0.02)):
        run = c.create_run(experiment, tags={"mlflow.parentRunId": parent,
                                             tracking.TRIAL_TAG: f"{variant}-2-0"}).info.run_id
        for key, value in {"objective.variant": variant, "model.latent_dim": "2", "train.seed": "0",
                           "model.backbone": "mlp"}.items():
            c.log_param(run, key, value)
        c.log_metric(run, "test/mse", mse, step=1)
        png = tmp_path / variant / "traversals.png"
        png.parent.mkdir()
        fig = Figure()
        fig.subplots().plot([0, 1], [mse, 0])
        fig.savefig(png)
        c.log_artifact(run, str(png), "figures")
        drawn[variant] = png.read_bytes()
        c.set_terminated(run, "FINISHED")
    record = record_mod.load_record(uri, parent, parse_spec(SPEC, "hand.yaml"))
    report = assemble.make_report(record, tmp_path / "out", log=False)
    copies = sorted((tmp_path / "out" / "plots" / "trials").rglob("*.png"))
    assert len(copies) == 1 and copies[0].name == "traversals.png"
    assert copies[0].read_bytes() == drawn["ae"]  # the best trial on test/mse (min), not the other
    assert copies[0] in report.files
    trial_id = copies[0].parent.name
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"(plots/trials/{trial_id}/traversals.png)" in summary and f"trial {trial_id}" in summary
    assemble.make_report(record, tmp_path / "out", log=False)  # a second report over the first: same files
    assert sorted((tmp_path / "out" / "plots" / "trials").rglob("*.png")) == copies


def test_the_front_of_a_disentanglement_search_is_drawn_on_its_test_side_measures(tmp_path):
    """A search on val/mse against val/dis/mig draws its Pareto front on test/mse against dis/mig (measured once,
    on test codes), and the dis/ measures have their own table."""
    from aesweep.report.plots import measured_once, pareto_axes, plot_pareto
    from aesweep.report.tables import disentanglement_table

    spec = parse_spec("name: d\ndataset: {name: shapes}\nobjective: {variant: {choice: [vae, tcvae]}}\n"
                      "eval: {disentanglement: [mig], online_disentanglement: [mig], online_probe_every: 1}\n"
                      "search: {algorithm: random, metrics: {val/mse: min, val/dis/mig: max}}\n")
    frame = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "run_id": ["1", "2", "3"], "status": ["finished"] * 3,
        "objective.variant": ["vae", "tcvae", "vae"], "model.latent_dim": [10, 10, 10],
        "test/mse": [0.01, 0.02, 0.03], "dis/mig": [0.1, 0.4, 0.05], "probe/logreg/acc": [0.9, 0.8, 0.95],
        "val/mse": [0.01, 0.02, 0.03], "val/dis/mig": [0.1, 0.4, 0.05]})
    record = record_mod.SweepRecord("d", "sqlite://", "p", "0", spec, frame, ["objective.variant", "model.latent_dim"],
                                    ["test/mse", "dis/mig", "probe/logreg/acc", "val/mse", "val/dis/mig"])
    assert [measured_once(m) for m in ("val/mse", "val/dis/mig", "val/probe/knn/acc", "dis/sap")] == [
        "test/mse", "dis/mig", "probe/knn/acc", "dis/sap"]
    assert pareto_axes(record) == ("test/mse", "dis/mig")
    _, front = plot_pareto(record, tmp_path / "front.png")
    assert list(front["trial_id"]) == ["a", "b"]  # c: more error and less MIG than a
    table = disentanglement_table(record)
    assert table is not None and set(table.stats["metric"]) == {"dis/mig"}
