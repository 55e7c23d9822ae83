"""The report's plots (PNG): each metric against latent size, label-efficiency curves, the Pareto front of
reconstruction error against probe accuracy, Optuna's optimisation history and parameter importance.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aesweep.report.record import LATENT, SweepRecord, lower_is_better
from aesweep.report.tables import config_groups, config_label
from aesweep.service.pareto import pareto_mask


def measured_once(metric: str) -> str:
    """The test-side metric a validation one stands for (``val/mse`` -> ``test/mse``, ``val/probe/knn/acc`` ->
    ``probe/knn/acc``, ``val/dis/mig`` -> ``dis/mig``); any other metric is itself."""
    if metric.startswith(("val/probe/", "val/dis/")):
        return metric[len("val/"):]
    if metric.startswith("val/"):
        return "test/" + metric[len("val/"):]
    return metric


# What the front's upper axis may be: a probe's accuracy, or a disentanglement measure.
QUALITY = re.compile(r"probe/[^/]+/acc|dis/[a-z_]+")


def pareto_axes(record: SweepRecord) -> tuple[str, str] | None:
    """(reconstruction error metric, quality metric) on the test side: the sweep's own objectives when it has them
    (a search on validation metrics is drawn on their test counterparts, measured once), else test MSE / BCE / MAE
    against the first probe accuracy."""
    done = record.finished
    available = [m for m in record.metric_columns if m in done and done[m].notna().any()]
    searched = [measured_once(m) for m in record.spec.search.metrics]
    # A reconstruction error: a searched loss (test/loss carries each variant's own regularisers) is not one.
    errors = [m for m in searched if m in available and m.startswith("test/") and lower_is_better(m)
              and not m.startswith("test/loss")]
    errors += [m for m in ("test/mse", "test/bce", "test/mae") if m in available]
    accs = [m for m in searched if m in available and QUALITY.fullmatch(m) and not lower_is_better(m)]
    accs += sorted(m for m in available if re.fullmatch(r"probe/[^/]+/acc", m))
    return (errors[0], accs[0]) if errors and accs else None


# --------------------------------------------------------------------------------------------------------------
# Plots (matplotlib Figure objects on the Agg canvas; no pyplot state)


def _figure(n_panels: int, width: float = 4.2, height: float = 3.2):
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _lines(ax: Any, record: SweepRecord, metric: str) -> bool:
    """One line per configuration (varied params except latent size) of ``metric`` against latent size."""
    done = record.finished
    if metric not in done or LATENT not in done:
        return False
    keys = [k for k in record.varied if k != LATENT]
    drawn = False
    for key, group in config_groups(done, keys):
        g = group.groupby(LATENT)[metric].agg(["mean", "std", "count"]).dropna(subset=["mean"]).sort_index()
        if g.empty:
            continue
        label = config_label(key, keys) or metric
        if (g["count"] > 1).any():
            ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=label)
        else:
            ax.plot(g.index, g["mean"], marker="o", label=label)
        drawn = True
    if drawn:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent size")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    return drawn


def _legend(fig: Any, axes: Any) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")


def plot_metric_grid(record: SweepRecord, metrics: list[str], title: str, path: Path) -> Path | None:
    metrics = [m for m in metrics if m in record.finished and record.finished[m].notna().any()]
    if not metrics or LATENT not in record.varied:
        return None
    fig, axes = _figure(len(metrics))
    drawn = [_lines(ax, record, m) for ax, m in zip(axes, metrics, strict=True)]
    if not any(drawn):
        return None
    fig.suptitle(f"{record.name}: {title}")
    _legend(fig, axes)
    fig.savefig(path, dpi=110)
    return path


def plot_label_efficiency(record: SweepRecord, path: Path) -> Path | None:
    done = record.finished
    curves: dict[str, list[tuple[int, str]]] = {}
    for m in record.metric_columns:
        found = re.fullmatch(r"probe/([^/]+)/acc_at_(\d+)", m)
        if found and m in done and done[m].notna().any():
            curves.setdefault(found.group(1), []).append((int(found.group(2)), m))
    if not curves:
        return None
    fig, axes = _figure(len(curves))
    # One colour per configuration apart from latent size; larger latents drawn darker (20 lines stay readable).
    keys = [k for k in record.varied if k != LATENT]
    latents = sorted(done[LATENT].unique()) if LATENT in record.varied else [None]
    colours = {}
    for ax, (probe, points) in zip(axes, sorted(curves.items()), strict=True):
        points.sort()
        for key, group in config_groups(done, keys):
            label = config_label(key, keys) or probe
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            for rank, latent in enumerate(latents):
                sub = group if latent is None else group[group[LATENT] == latent]
                if sub.empty:
                    continue
                ys = [sub[m].mean() for _, m in points]
                ax.plot([n for n, _ in points], ys, marker="o", color=colour,
                        alpha=0.35 + 0.65 * (rank + 1) / len(latents),
                        label=label if rank == len(latents) - 1 else None)
        ax.set_xscale("log")
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{probe}: label efficiency" + (" (darker: larger latent)" if latents != [None] else ""))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{record.name}: accuracy against the number of labels per class")
    _legend(fig, axes)
    fig.savefig(path, dpi=110)
    return path


def plot_pareto(record: SweepRecord, path: Path) -> tuple[Path, pd.DataFrame] | None:
    axes_metrics = pareto_axes(record)
    if axes_metrics is None:
        return None
    error_m, acc_m = axes_metrics
    done = record.finished.dropna(subset=[error_m, acc_m])
    if done.empty:
        return None
    error, acc = done[error_m].to_numpy(float), done[acc_m].to_numpy(float)
    front = np.array(pareto_mask(list(zip(error, -acc, strict=True))), dtype=bool)  # accuracy maximised
    fig, (ax,) = _figure(1, 6.4, 4.6)
    ax.scatter(error[~front], acc[~front], color="0.75", label="dominated", zorder=1)
    variants = done["objective.variant"].astype(str) if "objective.variant" in done else pd.Series(["trial"] * len(done))
    for variant in sorted(set(variants[front])):
        pick = front & (variants == variant).to_numpy()
        ax.scatter(error[pick], acc[pick], s=50, label=f"front: {variant}", zorder=3)
    order = np.argsort(error[front])
    ax.plot(error[front][order], acc[front][order], color="k", lw=1, zorder=2)
    if LATENT in done:
        for e, a, z in zip(error[front], acc[front], done.loc[front, LATENT], strict=True):
            ax.annotate(f"z={z}", (e, a), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel(f"{error_m} (lower is better)")
    ax.set_ylabel(f"{acc_m} (higher is better)")
    ax.set_title(f"{record.name}: Pareto front, {int(front.sum())} of {len(done)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    columns = ["trial_id", "run_id", *record.varied, error_m, acc_m]
    return path, done.loc[front, [c for c in columns if c in done]].sort_values(error_m)


def optuna_study(record: SweepRecord, metric: str) -> Any:
    """The finished trials as an Optuna study over the varied params (MLflow names), one objective: ``metric``."""
    import optuna

    done = record.finished.dropna(subset=[metric])
    keys = record.varied
    direction = "minimize" if record.spec.search.metrics.get(metric, "min" if lower_is_better(metric) else "max") \
        == "min" else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    distributions = {}
    for key in keys:
        values = done[key].dropna()
        if values.empty:
            continue
        numeric = pd.api.types.is_numeric_dtype(values)
        if numeric and values.nunique() > 2:
            lo, hi = float(values.min()), float(values.max())
            log = lo > 0 and hi / lo >= 100
            if pd.api.types.is_integer_dtype(values):
                distributions[key] = optuna.distributions.IntDistribution(int(lo), int(hi), log=log)
            else:
                distributions[key] = optuna.distributions.FloatDistribution(lo, hi, log=log)
        else:
            distributions[key] = optuna.distributions.CategoricalDistribution(sorted(values.astype(str).unique()))
    for _, row in done.iterrows():
        params, dists = {}, {}
        for key, dist in distributions.items():
            value = row[key]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue  # a conditional param this trial's variant does not have
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                value = str(value)
            elif isinstance(dist, optuna.distributions.IntDistribution):
                value = int(value)
            else:
                value = float(value)
            params[key], dists[key] = value, dist
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[metric])))
    return study


def plot_optuna(record: SweepRecord, out: Path) -> tuple[list[Path], pd.DataFrame | None]:
    """Optimisation history per search metric and fANOVA importance of the params on the primary metric."""
    done = record.finished
    metrics = [m for m in record.spec.search.metrics if m in done and done[m].notna().any()]
    if not metrics or len(done) < 2:
        return [], None
    paths = []
    fig, axes = _figure(len(metrics), 5.0, 3.4)
    for ax, metric in zip(axes, metrics, strict=True):
        values = done[metric].to_numpy(float)
        mode = record.spec.search.metrics[metric]
        best = np.fmin.accumulate(values) if mode == "min" else np.fmax.accumulate(values)
        x = np.arange(1, len(values) + 1)
        ax.scatter(x, values, s=14, color="tab:blue", label="trial")
        ax.step(x, best, where="post", color="tab:red", label=f"best so far ({mode})")
        ax.set_xlabel("trial (in start order)")
        ax.set_ylabel(metric)
        ax.set_title(f"history: {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{record.name}: optimisation history")
    path = out / "optimization_history.png"
    fig.savefig(path, dpi=110)
    paths.append(path)

    importance = None
    keys = record.varied
    if keys and len(done) >= 4:
        import optuna

        study = optuna_study(record, metrics[0])
        common = [k for k in keys if done[k].notna().all()]
        if common:
            scores = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=common)
            importance = pd.DataFrame({"param": list(scores), "importance": list(scores.values()),
                                       "metric": metrics[0]})
            fig, (ax,) = _figure(1, 6.0, 0.5 + 0.45 * len(scores))
            ax.barh(list(scores)[::-1], list(scores.values())[::-1], color="tab:blue")
            ax.set_xlabel(f"fANOVA importance for {metrics[0]}")
            ax.set_title(f"{record.name}: parameter importance")
            path = out / "param_importance.png"
            fig.savefig(path, dpi=110)
            paths.append(path)
    return paths, importance



