"""`aesweep report` and the eval-only sweep on real sweeps: real Ray, real MLflow (sqlite), tiny trials.

One grid sweep (2 variants x 2 latent sizes x 2 seeds) and one TPE sweep run once for the module; the tests read
what `report` wrote and compare it with what MLflow holds.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

from aesweep.report import assemble, tables
from aesweep.report import record as record_mod
from aesweep.service import driver, reevaluate
from aesweep.service.pareto import pareto_mask
from aesweep.spec.load import parse_spec
from tests.conftest import Store, cli, load, write_spec

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def grid_sweep(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    store = Store(root)
    path = write_spec(root, "rgrid",
                      model={"latent_dim": {"grid": [2, 4]}},
                      objective={"variant": {"grid": ["ae", "vae"]}},
                      eval={"probes": ["knn"], "clustering": ["kmeans"]},
                      search={"algorithm": "grid", "metrics": {"test/mse": "min", "probe/knn/acc": "max"},
                              "seeds": 2, "max_concurrent": 2})
    outcome = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri)
    assert outcome.counts["finished"] == 8, outcome.trials
    return store, outcome


@pytest.fixture(scope="module")
def grid_report(grid_sweep, tmp_path_factory):
    store, outcome = grid_sweep
    out = tmp_path_factory.mktemp("report")
    done = cli("report", outcome.state.experiment_path, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return store, outcome, out, done.stdout


def mlflow_frame(store: Store, parent_run_id: str) -> pd.DataFrame:
    """Straight from MLflow, without report.py: one row per child run."""
    rows = []
    for run in store.children(parent_run_id):
        rows.append({"trial_id": run.data.tags["aesweep.trial_id"], "run_id": run.info.run_id,
                     "variant": run.data.params["objective.variant"],
                     "latent": int(run.data.params["model.latent_dim"]),
                     "seed": int(run.data.params["train.seed"]), **run.data.metrics})
    return pd.DataFrame(rows)


def test_tables_hold_the_mlflow_values_with_seed_confidence_intervals(grid_report):
    store, outcome, out, _ = grid_report
    truth = mlflow_frame(store, outcome.state.parent_run_id)
    assert sorted(truth["seed"].unique()) == [0, 1]  # search.seeds: 2 trains each configuration twice

    mse = pd.read_csv(out / "recon_mse.csv")
    assert list(mse.columns) == ["variant", "2", "4"]  # rows: what varied besides latent size; columns: latent
    assert sorted(mse["variant"]) == ["ae", "vae"]
    stats = pd.read_csv(out / "stats.csv")
    for _, row in mse.iterrows():
        for latent in (2, 4):
            values = truth[(truth.variant == row["variant"]) & (truth.latent == latent)]["test/mse"]
            assert len(values) == 2
            assert row[str(latent)] == pytest.approx(values.mean(), rel=1e-9)
            cell = stats[(stats["table"] == "recon_mse") & (stats["objective.variant"] == row["variant"])
                         & (stats["model.latent_dim"] == latent)].iloc[0]
            std = values.std(ddof=1)
            assert cell["n"] == 2 and cell["std"] == pytest.approx(std, rel=1e-9)
            assert cell["ci95"] == pytest.approx(scipy_stats.t.ppf(0.975, 1) * std / math.sqrt(2), rel=1e-9)

    probes = pd.read_csv(out / "probes.csv")
    assert list(probes.columns) == ["variant", "probe", "2", "4"]
    knn = probes.set_index("variant")
    for variant in ("ae", "vae"):
        expected = truth[(truth.variant == variant) & (truth.latent == 4)]["probe/knn/acc"].mean()
        assert knn.loc[variant, "4"] == pytest.approx(expected, rel=1e-9)
    clustering = pd.read_csv(out / "clustering.csv")
    assert set(clustering["method"]) == {"kmeans ARI", "kmeans NMI"}

    # Markdown: mean +- CI, the best (lowest MSE) per latent column in bold, and nowhere else in that table.
    md = (out / "tables.md").read_text()
    section = md.split("### Test MSE")[1].split("###")[0]
    assert "95% confidence interval (Student t) over the training seeds (n = 2 per cell)" in section
    for latent in ("2", "4"):
        best = mse.loc[mse[latent].idxmin(), "variant"]
        line = next(x for x in section.splitlines() if x.startswith(f"| {best} |"))
        column = 1 + ["2", "4"].index(latent)
        assert line.split("|")[1 + column].strip().startswith("**"), line
    assert section.count("**") == 4  # two bold cells


def test_plots_summary_and_parent_run_artifacts(grid_report):
    store, outcome, out, stdout = grid_report
    for name in ("reconstruction_vs_latent", "probes_vs_latent", "clustering_vs_latent", "pareto_front"):
        data = (out / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    assert not (out / "plots" / "optimization_history.png").exists()  # a grid has no optimisation history

    truth = mlflow_frame(store, outcome.state.parent_run_id)
    best = truth.loc[truth["val/mse"].idxmin()]  # chosen on validation, reported on test
    summary = (out / "summary.md").read_text()
    assert "trials: 8 (8 finished)" in summary
    line = next(x for x in summary.splitlines() if x.startswith("| test/mse"))
    assert best["trial_id"] in line and best["run_id"] in line and "| val/mse |" in line
    # probe/knn/acc has no validation counterpart at the end of a trial here: chosen on itself, and marked.
    line = next(x for x in summary.splitlines() if x.startswith("| probe/knn/acc"))
    assert "probe/knn/acc (no validation counterpart)" in line
    assert "![Pareto front" in summary and "(plots/pareto_front.png)" in summary
    assert f"best test/mse: {best['test/mse']:.5g}" in stdout

    # Pareto front: no listed trial is dominated by another trial on (test/mse, probe/knn/acc).
    front = pd.read_csv(out / "pareto_front.csv")
    assert 1 <= len(front) <= 8
    err, acc = truth["test/mse"].to_numpy(), truth["probe/knn/acc"].to_numpy()
    for _, row in front.iterrows():
        e, a = row["test/mse"], row["probe/knn/acc"]
        assert not (((err <= e) & (acc >= a) & ((err < e) | (acc > a))).any())

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 8 and set(trials["status"]) == {"finished"}
    assert {"objective.variant", "model.latent_dim", "train.seed", "test/mse", "probe/knn/acc"} <= set(trials.columns)

    logged = store.artifacts(outcome.state.parent_run_id)
    assert {"report/summary.md", "report/trials.csv", "report/recon_mse.csv",
            "report/plots/pareto_front.png"} <= set(logged)


def test_report_finds_a_sweep_by_name_in_mlflow_and_counts_running_trials(grid_sweep, tmp_path):
    store, outcome = grid_sweep
    # Only MLflow (no Ray Tune storage here), and one trial still running: it is counted, not tabulated.
    uri, parent, spec = record_mod.locate("rgrid", storage=str(tmp_path / "nowhere"), tracking_uri=store.uri)
    assert parent == outcome.state.parent_run_id and spec is None
    record = record_mod.load_record(uri, parent)
    assert record.spec.name == "rgrid" and len(record.frame) == 8
    record.frame.loc[0, "status"] = "running"
    made = assemble.make_report(record, tmp_path / "out", log=False)
    assert "trials: 8 (7 finished, 1 running)" in (made.out_dir / "summary.md").read_text()
    stats = pd.read_csv(made.out_dir / "stats.csv")
    assert stats[stats["table"] == "recon_mse"]["n"].sum() == 7

    missing = cli("report", "no-such-sweep", "--storage", str(tmp_path), "--tracking-uri", store.uri)
    assert missing.returncode == 2
    assert "no-such-sweep" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_eval_only_sweep_adds_a_probe_and_leaves_training_metrics_alone(grid_sweep):
    store, outcome = grid_sweep
    parent = outcome.state.parent_run_id
    before = {}
    for run in store.children(parent):
        rid = run.info.run_id
        assert "probe/logreg/acc" not in run.data.metrics
        before[rid] = {key: [(m.step, m.value) for m in store.client.get_metric_history(rid, key)]
                       for key in ("train/loss", "val/loss", "epoch")} | {"params": run.data.params,
                                                                          "test/mse": run.data.metrics["test/mse"]}

    bad = cli("evaluate", outcome.state.experiment_path, "--set", "model.latent_dim=3")
    assert bad.returncode == 2 and "eval.*" in bad.stderr
    bad = cli("evaluate", outcome.state.experiment_path, "--set", "eval.probes=[no_such_probe]")
    assert bad.returncode == 2 and "eval.probes (from --set)" in bad.stderr

    uri, parent_id, spec = record_mod.locate(outcome.state.experiment_path)
    results = reevaluate.evaluate_sweep(uri, parent_id, spec, ["eval.probes=[knn, logreg]", "eval.label_efficiency=[5]"])
    assert len(results) == 8 and all(r["status"] == "ok" for r in results), results

    for run in store.children(parent):
        rid = run.info.run_id
        metrics = run.data.metrics
        assert 0.0 <= metrics["probe/logreg/acc"] <= 1.0 and 0.0 <= metrics["probe/logreg/acc_at_5"] <= 1.0
        assert "eval.probes=[knn, logreg]" in run.data.tags["aesweep.reevaluated"]
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/loss", "epoch"):
            assert [(m.step, m.value) for m in store.client.get_metric_history(rid, key)] == before[rid][key]
        assert run.data.params == before[rid]["params"]
        # Same weights, same data: the re-evaluation reproduces the trial's own test metric.
        assert metrics["test/mse"] == pytest.approx(before[rid]["test/mse"], rel=1e-5)


def test_searched_sweep_gets_optimisation_history_and_fanova_importance(local_ray, tmp_path):
    store = Store(tmp_path)
    path = write_spec(tmp_path, "rtpe",
                      model={"latent_dim": {"int": [2, 8]}},
                      train={"lr": {"loguniform": [1.0e-4, 3.0e-2]}},
                      search={"algorithm": "tpe", "metrics": {"val/loss": "min"}, "num_samples": 6,
                              "max_concurrent": 2})
    outcome = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri)
    assert outcome.counts["finished"] == 6
    record = record_mod.load_record(*record_mod.locate(outcome.state.experiment_path)[:2])
    made = assemble.make_report(record, tmp_path / "report", log=False)
    for name in ("optimization_history", "param_importance"):
        assert (made.out_dir / "plots" / f"{name}.png").read_bytes().startswith(PNG)
    importance = pd.read_csv(made.out_dir / "param_importance.csv")
    assert set(importance["param"]) == {"model.latent_dim", "train.lr"}
    assert importance["importance"].sum() == pytest.approx(1.0)
    assert (importance["importance"] >= 0).all()


# --------------------------------------------------------------------------------------------------------------
# Table logic on a hand-made frame (no MLflow): folds, conditional knobs, directions


def _record(rows: list[dict], metrics: dict[str, str]) -> record_mod.SweepRecord:
    spec = parse_spec("name: hand\nsearch: {algorithm: grid, metrics: " + yaml.safe_dump(metrics,
                      default_flow_style=True).strip() + "}\n")
    frame = pd.DataFrame([{"trial_id": f"t{i}", "run_id": f"r{i}", "status": "finished", "reason": "",
                           "start_time": i, **r} for i, r in enumerate(rows)])
    params = [c for c in frame.columns if "." in c and "/" not in c]
    return record_mod.SweepRecord("hand", "sqlite:///x", "p", "0", spec, frame, params,
                           [c for c in frame.columns if "/" in c])


def test_folds_aggregate_as_mean_and_std_and_conditional_knobs_show_a_dash():
    rng = np.random.default_rng(0)
    rows = []
    for variant, knob in (("ae", None), ("sparse", 1e-4)):
        for latent in (8, 16):
            for fold in range(5):
                rows.append({"objective.variant": variant, "objective.sparsity": knob, "model.latent_dim": latent,
                             "dataset.fold": fold, "test/psnr": 20 + latent / 8 + rng.normal(),
                             "test/mse": 0.01 * latent / 8 + rng.normal() * 1e-4})
    record = _record(rows, {"test/psnr": "max"})
    assert record.varied == ["objective.variant", "model.latent_dim"]  # sparsity: one value, owned by sparse
    assert record.replicate == "dataset.fold"
    psnr = tables.study_table(record, "recon_psnr", "PSNR", {"test/psnr": "psnr"}, None)
    frame = pd.DataFrame(rows)
    for variant in ("ae", "sparse"):
        for latent in (8, 16):
            values = frame[(frame["objective.variant"] == variant) & (frame["model.latent_dim"] == latent)]["test/psnr"]
            assert psnr.means.at[(variant,), latent] == pytest.approx(values.mean())
            assert f"± {values.std(ddof=1):.2g}" in psnr.cells.at[(variant,), latent]
    md = tables.table_markdown(psnr, record.replicate)
    folds = frame["dataset.fold"].nunique()
    assert f"standard deviation over the cross-validation folds (n = {folds} per cell)" in md
    # PSNR: higher is better; MSE: lower is better, each column bolds its own best.
    for latent in (8, 16):
        best = psnr.means[latent].idxmax()
        assert psnr.cells.at[best, latent].startswith("**")
    mse = tables.study_table(record, "recon_mse", "MSE", {"test/mse": "mse"}, None)
    for latent in (8, 16):
        assert mse.cells.at[mse.means[latent].idxmin(), latent].startswith("**")
        assert not mse.cells.at[mse.means[latent].idxmax(), latent].startswith("**")

    # A knob with several values for its own variant is a row level; other variants show "-".
    for r in rows:
        if r["objective.variant"] == "sparse" and r["dataset.fold"] % 2:
            r["objective.sparsity"] = 1e-3
    table = tables.study_table(_record(rows, {"test/psnr": "max"}), "t", "t", {"test/psnr": "psnr"}, None)
    assert list(table.means.index.names) == ["variant", "sparsity"]
    assert ("ae", "-") in table.means.index and ("sparse", 1e-3) in table.means.index


def test_pareto_mask_keeps_exactly_the_non_dominated_points():
    """Error minimised, accuracy maximised (negated): the report's front."""
    error = [0.1, 0.2, 0.3, 0.15, 0.1]
    accuracy = [0.5, 0.7, 0.9, 0.6, 0.4]
    assert pareto_mask([(e, -a) for e, a in zip(error, accuracy, strict=True)]) == [True, True, True, True, False]
    assert re.fullmatch(r"probe/[^/]+/acc", "probe/knn/acc")
    assert pareto_mask([(1.0, -0.5), (1.0, -0.5)]) == [True, True]  # ties stay


def test_report_of_an_unknown_path_is_one_line_and_exit_2(tmp_path):
    done = cli("report", str(tmp_path / "nothing"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert str(Path(tmp_path / "nothing").name) in done.stderr


# The grid sweep's trials decide these claims one way by construction: a PSNR in dB (10-20 here) exceeds an MSE
# of images in [0, 1], a
# test/mse of about 0.05 is nowhere near 5, and two sides that select the same trials differ by zero, inside noise.
CLAIMS = """\
claims:
  - id: psnr-above-mse
    finding: the PSNR's number exceeds the MSE's
    study: "by construction"
    relation: greater
    where: {objective.variant: ae}
    a: {metric: test/psnr}
    b: {metric: test/mse}
  - id: psnr-below-mse
    finding: the PSNR's number is below the MSE's (false)
    relation: less
    where: {objective.variant: ae}
    a: {metric: test/psnr}
    b: {metric: test/mse}
  - id: mse-near-five
    finding: test MSE of 5
    relation: within
    metric: test/mse
    value: 5.0
    tolerance: 0.001
  - id: same-trials
    finding: a side against itself
    relation: less
    metric: test/mse
    a: {where: {objective.variant: ae}}
    b: {where: {objective.variant: ae, model.latent_dim: [2, 4]}}
  - id: ae-over-pca
    finding: the AE reconstructs better than PCA
    kind: sanity
    relation: less
    metric: test/mse
    a: {where: {objective.variant: ae}}
    b: {where: {objective.variant: pca}}
  - id: cifar-levels
    finding: CIFAR-10 probe accuracy of the study
    testable: false
    reason: CIFAR-10 cannot be downloaded on this machine
"""


def test_report_computes_each_claims_verdict_from_the_trials(grid_sweep, tmp_path):
    store, outcome = grid_sweep
    claims = tmp_path / "rgrid-findings.yaml"
    claims.write_text(CLAIMS)
    out = tmp_path / "report"
    done = cli("report", outcome.state.experiment_path, "--out", str(out), "--findings", str(claims), "--no-log")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "findings.csv").set_index("id")
    assert table["verdict"].to_dict() == {
        "psnr-above-mse": "reproduced", "psnr-below-mse": "contradicted", "mse-near-five": "contradicted",
        "same-trials": "inconclusive", "ae-over-pca": "not tested", "cifar-levels": "not testable here"}
    # The interval is over the sweep's own trials: 4 AE trials a side (2 latent sizes x 2 seeds, so unpaired).
    frame = mlflow_frame(store, outcome.state.parent_run_id)
    ae = frame[frame["variant"] == "ae"]
    assert table.loc["psnr-above-mse", "estimate"] == pytest.approx(ae["test/psnr"].mean() - ae["test/mse"].mean())
    assert table.loc["psnr-above-mse", "statistic"].startswith("Welch t, 4 vs 4")
    assert table.loc["same-trials", "estimate"] == 0.0
    assert table.loc["same-trials", "ci95_low"] < 0 < table.loc["same-trials", "ci95_high"]
    md = (out / "findings.md").read_text()
    assert "Sanity checks" in md and "CIFAR-10 cannot be downloaded" in md
    summary = (out / "summary.md").read_text()
    assert "## Findings" in summary and "1 reproduced, 2 contradicted, 1 inconclusive, 1 not testable here" in summary


def test_a_bad_findings_file_is_one_line_and_exit_2_before_anything_is_written(grid_sweep, tmp_path):
    _, outcome = grid_sweep
    claims = tmp_path / "bad-findings.yaml"
    claims.write_text("claims:\n  - id: x\n    finding: f\n    relation: less\n    metric: test/mse\n")
    out = tmp_path / "report"
    done = cli("report", outcome.state.experiment_path, "--out", str(out), "--findings", str(claims), "--no-log")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"{claims}:2: claims.0: relation less compares side a with side b: give b"]
    assert not out.exists()


def test_findings_read_the_trials_of_the_sweeps_named_with_it(grid_sweep, tmp_path):
    # A study's baselines run as their own stage (their own sweep): --with-sweep brings their trials to the claims.
    store, outcome = grid_sweep
    path = write_spec(tmp_path, "rgrid-pca", model={"latent_dim": {"grid": [2, 4]}}, objective={"variant": "pca"},
                      eval={"probes": ["knn"], "clustering": ["kmeans"]},
                      search={"algorithm": "grid", "metrics": {"test/mse": "min"}, "seeds": 2})
    baselines = driver.run_sweep(load(path), storage=store.storage, tracking_uri=store.uri)
    assert baselines.counts["finished"] == 4, baselines.trials
    claims = tmp_path / "claims.yaml"
    claims.write_text(CLAIMS)
    out = tmp_path / "report"
    done = cli("report", outcome.state.experiment_path, "--out", str(out), "--findings", str(claims), "--no-log",
               "--with-sweep", baselines.state.experiment_path)
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(out / "findings.csv").set_index("id").loc["ae-over-pca"]
    assert row["verdict"] in ("reproduced", "contradicted", "inconclusive")  # decided on 4 AE vs 4 PCA trials
    assert row["statistic"] == "Welch t, 4 vs 4 trials"
    assert "and those of rgrid-pca" in (out / "summary.md").read_text()
    # The sweep's own tables stay its own: no PCA row.
    assert "pca" not in pd.read_csv(out / "trials.csv")["objective.variant"].tolist()
