"""A sweep -> the tables and plots that papers in this field print: ``python -m aesweep report NAME_OR_PATH``.

Reads the sweep's child runs from MLflow (finished or still running) into one pandas frame, one row per trial, and
writes to ``out_dir`` (and logs the same files on the sweep's parent run under ``report/``):

- ``summary.md``: the page to read first (the sweep, trial counts, best configurations, links to everything);
- ``trials.csv``: one row per trial (id, run, status, reason, every param, the last value of every metric);
- study tables, CSV and Markdown (``tables.md`` holds them all): every reconstruction metric, probe accuracy
  (classifier as a row level), clustering ARI / NMI (method as a row level), the final validation values beside
  the test values (``val_test``: loss, mse, psnr as each trial's last epoch reported them, the beta-VAE study's
  "mean +- std over validation and test folds") and parameter counts (``params``, when the trials log
  ``model/params*``, as metrics or params) by configuration (rows) x latent size (columns). Rows and columns come from what the sweep varied. Replicates (``train.seed`` with
  ``search.seeds``, ``dataset.fold`` with k-fold cross-validation) are aggregated: mean +- 95% CI over seeds, mean
  +- std over folds; ``stats.csv`` holds mean, std, ci95 and n of every cell. The best value per column is bold.
- plots (PNG): each reconstruction metric and each probe against latent size (log2 axis, one line per
  configuration), label-efficiency curves, the Pareto front of reconstruction error vs probe accuracy with
  dominated trials greyed, for searched sweeps Optuna's optimisation history and fANOVA parameter importance, and
  the training and validation loss per epoch of every trial, one panel per configuration (``loss_curves*.png``,
  from the metric histories in MLflow; ``report_curves``).

Only finished trials enter tables and plots; failed and pruned ones are counted and listed in ``summary.md``.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aesweep.report.curves import plot_loss_curves
from aesweep.report.findings import counts as finding_counts
from aesweep.report.findings import evaluate as evaluate_findings
from aesweep.report.findings import write_findings
from aesweep.report.plots import (
    measured_once,
    plot_label_efficiency,
    plot_metric_grid,
    plot_optuna,
    plot_pareto,
)
from aesweep.report.record import LATENT, SweepRecord
from aesweep.report.tables import Table, all_tables, format_value, table_markdown
from aesweep.service import tracking
from aesweep.spec.findings import Findings

# --------------------------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    out_dir: Path
    files: list[Path]
    record: SweepRecord
    best: dict[str, dict[str, Any]]


def selection_metric(metric: str, columns: Any) -> str:
    """What the best configuration for ``metric`` is chosen on: its validation counterpart (``test/X`` ->
    ``val/X``, ``probe/P/acc`` -> ``probe/P/val_acc`` or ``val/probe/P/acc``) where the sweep logged it, so that test is measured once and
    never chosen on; the metric itself otherwise (the summary then says the choice was made on it)."""
    if metric.startswith("test/"):
        candidates = ["val/" + metric.removeprefix("test/")]
    elif metric.startswith(("probe/", "cluster/")):
        # A probe fitted on train and scored on the validation split (the fast protocol's probe/P/val_acc), else the
        # online probe's last validation score.
        candidates = ([metric.removesuffix("/acc") + "/val_acc"] if metric.endswith("/acc") else []) + ["val/" + metric]
    else:
        return metric
    return next((c for c in candidates if c in columns), metric)


def best_rows(record: SweepRecord) -> dict[str, dict[str, Any]]:
    """For each search metric, the finished trial best on its ``selection_metric`` (the row; its key
    ``chosen_on`` names what it was chosen on)."""
    done = record.finished
    out = {}
    for metric, mode in record.spec.search.metrics.items():
        chosen_on = selection_metric(metric, done.columns)
        if metric not in done or chosen_on not in done or done[chosen_on].notna().sum() == 0:
            continue
        idx = done[chosen_on].idxmin() if mode == "min" else done[chosen_on].idxmax()
        # A search on a validation metric is reported on its test-side counterpart, measured once.
        reported = measured_once(metric) if measured_once(metric) in done else metric
        out[metric] = {**done.loc[idx].to_dict(), "chosen_on": chosen_on, "reported": reported}
    return out


def best_trial_figures(record: SweepRecord, best: dict[str, dict[str, Any]], out_dir: Path
                       ) -> list[tuple[str, Path]]:
    """The figures each best trial drew (its MLflow ``figures/*.png``: the study's reconstructions, latent plots,
    traversals, ...), copied to ``out_dir/<trial id>/`` so that the report shows them beside its own plots. One
    copy per trial when it is best on several metrics; a trial that drew none adds nothing."""
    out: list[tuple[str, Path]] = []
    for row in {row["trial_id"]: row for row in best.values()}.values():
        run_id = row["run_id"]
        names = [a.path for a in tracking.list_artifacts(record.uri, run_id, "figures")
                 if not a.is_dir and a.path.endswith(".png")]
        if not names:
            continue
        target = out_dir / str(row["trial_id"])
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:  # one download of the folder, then its PNGs moved up
            local = Path(tracking.download_artifacts(record.uri, run_id, "figures", tmp))
            for name in sorted(Path(n).name for n in names):
                path = target / name
                shutil.move(local / name, path)
                out.append((f"trial {row['trial_id']} ({config_text(row, record)}): "
                            f"{path.stem.replace('_', ' ')}", path))
    return out


def make_report(record: SweepRecord, out_dir: str | Path, log: bool = True, command: str | None = None,
                findings: Findings | None = None, findings_source: str = "",
                also: list[SweepRecord] | None = None) -> Report:
    """Write every table, plot and the summary of ``record`` to ``out_dir`` (created), and the verdict of every
    claim of ``findings`` (read from ``findings_source``) on the finished trials of ``record`` and of the sweeps
    ``also`` (a study's arms run as separate stages); log them on the parent run under ``report/`` when ``log``."""
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    trials = record.frame.drop(columns=["start_time"])
    trials.to_csv(out / "trials.csv", index=False)
    files.append(out / "trials.csv")

    tables = all_tables(record)
    replicate = record.replicate
    stats = []
    for table in tables:
        path = out / f"{table.name}.csv"
        frame = table.means.copy()
        frame.columns = [str(c) for c in frame.columns]
        frame.to_csv(path)
        files.append(path)
        stats.append(table.stats.assign(table=table.name))
    if stats:
        pd.concat(stats, ignore_index=True).to_csv(out / "stats.csv", index=False)
        files.append(out / "stats.csv")
    tables_md = "\n".join(table_markdown(t, replicate) for t in tables)
    (out / "tables.md").write_text(f"# {record.name}: tables\n\n" + (tables_md or "No finished trial yet.\n"))
    files.append(out / "tables.md")

    figures: list[tuple[str, Path]] = []
    recon = [m for m in record.metric_columns if m.startswith("test/") and "loss" not in m]
    probe_accs = [m for m in record.metric_columns if re.fullmatch(r"probe/[^/]+/acc", m)]
    cluster = [m for m in record.metric_columns if re.fullmatch(r"cluster/[^/]+/(ari|nmi)", m)]
    for title, metrics, name in (("reconstruction against latent size", recon, "reconstruction_vs_latent"),
                                 ("probe accuracy against latent size", probe_accs, "probes_vs_latent"),
                                 ("clustering against latent size", cluster, "clustering_vs_latent")):
        if path := plot_metric_grid(record, metrics, title, plots / f"{name}.png"):
            figures.append((title, path))
    if path := plot_label_efficiency(record, plots / "label_efficiency.png"):
        figures.append(("label efficiency", path))

    figures += [(f"loss curves per configuration ({p.stem.replace('_', ' ')})", p)
                for p in plot_loss_curves(record, plots)]
    pareto = plot_pareto(record, plots / "pareto_front.png")
    if pareto is not None:
        columns = pareto[1].columns
        figures.append((f"Pareto front: {columns[-2]} against {columns[-1]}", pareto[0]))
        pareto[1].to_csv(out / "pareto_front.csv", index=False)
        files.append(out / "pareto_front.csv")
    importance = None
    if record.spec.search.algorithm != "grid":
        optuna_paths, importance = plot_optuna(record, plots)
        figures += [(p.stem.replace("_", " "), p) for p in optuna_paths]
        if importance is not None:
            importance.to_csv(out / "param_importance.csv", index=False)
            files.append(out / "param_importance.csv")
    best = best_rows(record)
    figures += best_trial_figures(record, best, plots / "trials")
    files += [p for _, p in figures]

    claim_trials = pd.concat([record.finished, *(other.finished for other in also or [])], ignore_index=True)
    outcomes = evaluate_findings(findings, claim_trials) if findings is not None else None
    if outcomes is not None:
        files += write_findings(outcomes, out, findings_source)

    summary = _summary_md(record, tables, figures, best, pareto, importance, out, command)
    if outcomes is not None:
        tally = ", ".join(f"{n} {v}" for v, n in finding_counts(outcomes).items() if n)
        sanity = ", ".join(f"{n} {v}" for v, n in finding_counts(outcomes, "sanity").items() if n)
        with_others = f" and those of {', '.join(o.name for o in also)}" if also else ""
        summary = summary.rstrip("\n") + (f"\n\n## Findings\n\nThe study's claims ({findings_source}), computed "
                                          f"on this sweep's trials{with_others}: {tally or 'none'}"
                                          + (f"; sanity checks: {sanity}" if sanity else "")
                                          + ". Every verdict with its statistic: [findings.md](findings.md).\n")
    (out / "summary.md").write_text(summary)
    files.insert(0, out / "summary.md")
    if log:
        for path in files:
            rel = path.relative_to(out).parent
            artifact_dir = "report" if str(rel) == "." else f"report/{rel}"
            tracking.log_artifact(record.uri, record.parent_run_id, str(path), artifact_dir)
    return Report(out, files, record, best)


def config_text(row: dict[str, Any], record: SweepRecord) -> str:
    keys = record.varied or ["objective.variant", LATENT]
    return ", ".join(f"{k}={row.get(k)}" for k in keys if k in row)


def _summary_md(record: SweepRecord, tables: list[Table], figures: list[tuple[str, Path]],
                best: dict[str, dict[str, Any]], pareto: tuple[Path, pd.DataFrame] | None,
                importance: pd.DataFrame | None, out: Path, command: str | None) -> str:
    spec = record.spec
    frame = record.frame
    counts = frame["status"].value_counts().to_dict()
    count_text = ", ".join(f"{counts[s]} {s}" for s in ("finished", "running", "pruned", "stopped", "failed")
                           if counts.get(s)) or "no trials yet"
    lines = [f"# Sweep report: {record.name}", ""]
    if command:
        lines += [f"Made by `{command}`.", ""]
    lines += [
        f"- spec: `{spec.source or 'spec/sweep.yaml'}`, search `{spec.search.algorithm}` on "
        + ", ".join(f"`{m}` ({mode})" for m, mode in spec.search.metrics.items()),
        f"- dataset `{spec.resolve().dataset.name}`, backbone `{spec.resolve().model.backbone}`; varied: "
        + (", ".join(f"`{k}`" for k in record.varied) or "nothing")
        + (f"; replicates over `{record.replicate}`" if record.replicate else ""),
        f"- trials: {len(frame)} ({count_text})",
        f"- MLflow: `{record.uri}`, experiment {record.experiment_id}, parent run `{record.parent_run_id}`; "
        f"runs table at `#/experiments/{record.experiment_id}/runs` of the MLflow UI",
        "",
        "## Best configurations",
        "",
    ]
    if best:
        lines += ["Each is chosen on validation and reported on test, measured once (chosen on a test metric itself "
                  "only where the sweep has no validation counterpart: marked).", "",
                  "| objective | chosen on | reported | value | trial | configuration | run |",
                  "|---|---|---|---:|---|---|---|"]
        for metric, row in best.items():
            reported = row.get("reported", metric)
            chosen = row["chosen_on"]
            if chosen == metric and measured_once(metric) == metric:
                chosen = f"{metric} (no validation counterpart)"
            lines.append(f"| {metric} ({spec.search.metrics[metric]}) | {chosen} | {reported} | "
                         f"{format_value(float(row[reported]))} | {row['trial_id']} | {config_text(row, record)} | "
                         f"`{row['run_id']}` |")
    else:
        lines.append("No finished trial reports the search metrics yet.")
    if pareto is not None and len(pareto[1]) > 1:
        lines += ["", f"Pareto front ({len(pareto[1])} trials, `pareto_front.csv`): "
                  + "; ".join(config_text(r, record) for r in pareto[1].to_dict("records")[:8])]
    if importance is not None:
        lines += ["", "Parameter importance (fANOVA, " + str(importance['metric'].iloc[0]) + "): "
                  + ", ".join(f"{p} {v:.2f}" for p, v in zip(importance['param'], importance['importance'], strict=True))]
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        lines += ["", "## Failed trials", "", "| trial | configuration | reason |", "|---|---|---|"]
        for row in failed.to_dict("records"):
            lines.append(f"| {row['trial_id']} | {config_text(row, record)} | {str(row['reason'])[:200]} |")
    lines += ["", "## Tables", "", "All in [tables.md](tables.md); as CSV: "
              + ", ".join(f"[{t.name}.csv]({t.name}.csv)" for t in tables) + "; every trial: [trials.csv](trials.csv)."]
    head = [t for t in tables if t.name in ("recon_mse", "probes")] or tables[:1]
    for table in head:
        lines += ["", table_markdown(table, record.replicate)]
    if figures:
        lines += ["## Plots", ""]
        for title, path in figures:
            rel = path.relative_to(out)
            lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(lines) + "\n"



