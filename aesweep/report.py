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

import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aesweep import tracking
from aesweep.spec import SweepSpec, parse_spec

# Params that repeat a configuration instead of changing it: aggregated over, never a row or column.
REPLICATE_PARAMS = ("train.seed", "dataset.fold")
LATENT = "model.latent_dim"
# Params that change between trials without describing the configuration (set by the sweep machinery).
NOT_CONFIG = {"name"}
# Direction of "better" by metric name (the last path element); anything else is higher-is-better.
LOWER_IS_BETTER = re.compile(r"(mse|rmse|mae|ergas|bce|bce_bits|loss|nn_distance|kl_bits|noise_frac|_s)$")
# Parameter counts (``model/params``, ``model/params/encoder``, ...: logged by the trials as metrics, or as params):
# numbers to show, not a configuration, and neither better nor worse when larger.
PARAM_COUNT = "model/params"



def lower_is_better(metric: str) -> bool:
    return bool(LOWER_IS_BETTER.search(metric.split("/")[-1] if "/" in metric else metric))


# --------------------------------------------------------------------------------------------------------------
# Reading a sweep


@dataclass
class SweepRecord:
    """A sweep as MLflow holds it: its spec, where it is, and one row per trial."""

    name: str
    uri: str
    parent_run_id: str
    experiment_id: str
    spec: SweepSpec
    frame: pd.DataFrame
    param_columns: list[str] = field(default_factory=list)
    metric_columns: list[str] = field(default_factory=list)

    @property
    def finished(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "finished"]

    @property
    def varied(self) -> list[str]:
        """Config params whose value differs between finished trials (replicates excluded), in spec order."""
        done = self.finished
        out = []
        for column in self.param_columns:
            if column in REPLICATE_PARAMS or column in NOT_CONFIG:
                continue
            # A knob only some variants have (NaN elsewhere) varies only if it takes several values.
            if done[column].dropna().astype(str).nunique() > 1:
                out.append(column)
        return out

    @property
    def replicate(self) -> str | None:
        """The replicate param (folds or seeds) that takes several values, if any."""
        done = self.finished
        for column in REPLICATE_PARAMS:
            if column in done and done[column].nunique() > 1:
                return column
        return None


def _value(text: str | None) -> Any:
    """An MLflow param string back to a number where it is one (params are stored as strings)."""
    if text is None:
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def load_record(uri: str, parent_run_id: str, spec: SweepSpec | None = None) -> SweepRecord:
    """The sweep whose parent run is ``parent_run_id``: every child run as one row."""
    c = tracking.client(uri)
    parent = tracking._retry(lambda: c.get_run(parent_run_id))
    if spec is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = tracking._retry(lambda: c.download_artifacts(parent_run_id, "spec/sweep.yaml", tmp))
            spec = parse_spec(Path(path).read_text(), "spec/sweep.yaml (MLflow)")
    rows, params, metrics = [], [], []
    for run in tracking.children(uri, parent_run_id):
        tags = run.data.tags
        row = {"trial_id": tags.get(tracking.TRIAL_TAG, "?"), "run_id": run.info.run_id,
               "status": tracking.trial_status(run),
               "reason": tags.get(tracking.FAILURE_TAG, ""), "start_time": run.info.start_time}
        for key, text in run.data.params.items():
            row[key] = _value(text)
            if key.startswith(PARAM_COUNT):  # a count logged as a param: a number to tabulate
                if key not in metrics:
                    metrics.append(key)
            elif key not in params:
                params.append(key)
        for key, value in run.data.metrics.items():
            row[key] = value
            if key not in metrics:
                metrics.append(key)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["trial_id", "run_id", "status", "reason", "start_time", *params, *metrics])
    frame = frame.sort_values(["start_time", "trial_id"]).reset_index(drop=True)
    name = parent.data.tags.get(tracking.SWEEP_TAG, parent.info.run_name or spec.name)
    return SweepRecord(name, uri, parent_run_id, parent.info.experiment_id, spec, frame,
                       _spec_order(params, spec), sorted(metrics))


def _spec_order(params: list[str], spec: SweepSpec) -> list[str]:
    """Params in the order the spec's sections list them (variant before latent size before knobs)."""
    order: dict[str, int] = {}
    for key in ["objective.variant", LATENT, *spec.resolve().flat()]:
        order.setdefault(key, len(order))
    return sorted(params, key=lambda p: (order.get(p, len(order)), p))


# --------------------------------------------------------------------------------------------------------------
# Tables


@dataclass
class Table:
    """One study table: a wide frame of cell texts plus the numbers behind them."""

    name: str
    title: str
    means: pd.DataFrame  # rows: configuration (+ probe / method); columns: latent size or "value"
    cells: pd.DataFrame  # the Markdown text of each cell (mean, +- spread, bold if best in its column)
    stats: pd.DataFrame  # long: row keys, column key, metric, mean, std, ci95, n


def _ci95(std: float, n: int) -> float:
    if n < 2 or not math.isfinite(std):
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def _fmt(value: float, metric: str = "") -> str:
    if not math.isfinite(value):
        return "-"
    if metric.startswith(PARAM_COUNT):
        return f"{value:,.0f}"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}" if magnitude < 10 else f"{value:.2f}"


def _groups(frame: pd.DataFrame, keys: list[str], sort: bool = True) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """``(values of keys, rows)`` per distinct combination of ``keys`` (NaN kept as a value); the whole frame
    under ``()`` when there are no keys. The values are always a tuple, whatever pandas' version returns."""
    if not keys:
        yield (), frame
        return
    for key, group in frame.groupby(keys, dropna=False, sort=sort):
        yield (key if isinstance(key, tuple) else (key,)), group


def _label(values: Iterable[Any], keys: list[str]) -> str:
    return ", ".join(f"{_short(k)}={v}" if k != "objective.variant" else str(v) for k, v in zip(keys, values, strict=True))


def _short(param: str) -> str:
    """``objective.prior.mean`` -> ``prior.mean``: the param without its section."""
    return param.split(".", 1)[1] if "." in param else param


def study_table(record: SweepRecord, name: str, title: str, metrics: dict[str, str], level: str | None
                ) -> Table | None:
    """Rows = the varied config params (+ ``level``), columns = latent size when it varies, else one "value".

    ``metrics`` maps each metric column to its label in the ``level`` row level (e.g. 'probe/knn/acc' -> 'knn');
    with ``level`` None there must be one metric. A param that only some variants have shows "-" for the others.
    """
    done = record.finished.copy()
    metrics = {m: lv for m, lv in metrics.items() if m in done and done[m].notna().any()}
    if done.empty or not metrics:
        return None
    varied = record.varied
    column_key = LATENT if LATENT in varied else None
    row_keys = [k for k in varied if k != column_key]
    for key in row_keys:
        done[key] = done[key].astype(object).where(done[key].notna(), "-")
    group_keys = row_keys + ([column_key] if column_key else [])
    long_rows = []
    for key, group in _groups(done, group_keys, sort=False):
        config = dict(zip(group_keys, key, strict=True))
        for metric, label in metrics.items():
            values = group[metric].dropna().astype(float)
            if values.empty:
                continue
            n = len(values)
            std = float(values.std(ddof=1)) if n > 1 else float("nan")
            long_rows.append({**config, "_level": label, "metric": metric, "mean": float(values.mean()),
                              "std": std, "ci95": _ci95(std, n), "n": n})
    if not long_rows:
        return None
    stats = pd.DataFrame(long_rows)
    index_cols = row_keys + (["_level"] if level or not row_keys else [])
    row_ids = sorted({tuple(r) for r in stats[index_cols].itertuples(index=False)},
                     key=lambda r: tuple(_sort_key(v) for v in r))
    col_ids = sorted(stats[column_key].unique(), key=_sort_key) if column_key else ["value"]
    spread_of = "std" if record.replicate == "dataset.fold" else "ci95"
    lookup = {(tuple(r[c] for c in index_cols), r[column_key] if column_key else "value"): r
              for r in stats.to_dict("records")}
    index = pd.MultiIndex.from_tuples(row_ids, names=[_short(c) if c != "_level" else (level or "metric")
                                                      for c in index_cols])
    means = pd.DataFrame(np.nan, index=index, columns=col_ids, dtype=float)
    cells = pd.DataFrame("-", index=index, columns=col_ids, dtype=object)
    for col in col_ids:
        by_metric: dict[str, list[tuple[tuple, float, float]]] = {}
        for row in row_ids:
            found = lookup.get((row, col))
            if found is not None:
                by_metric.setdefault(found["metric"], []).append((row, found["mean"], found[spread_of]))
        for metric, entries in by_metric.items():
            pick = min if lower_is_better(metric) else max
            ranked = len(entries) > 1 and not metric.startswith(PARAM_COUNT)
            best = pick(entries, key=lambda e: e[1])[0] if ranked else None
            for row, mean, spread in entries:
                means.at[row, col] = mean
                spread_shown = record.replicate and math.isfinite(spread) and not metric.startswith(PARAM_COUNT)
                text = _fmt(mean, metric) + (f" ± {spread:.2g}" if spread_shown else "")
                cells.at[row, col] = f"**{text}**" if row == best else text
    stats = stats.rename(columns={"_level": level or "label"})
    return Table(name, title, means, cells, stats)


def _sort_key(value: Any) -> Any:
    return (0, float(value), "") if isinstance(value, int | float | np.integer | np.floating) else (1, 0.0, str(value))


def reconstruction_tables(record: SweepRecord) -> list[Table]:
    out = []
    for metric in [m for m in record.metric_columns if m.startswith("test/") and "/loss" not in m
                   and m != "test/loss"]:
        short = metric.split("/", 1)[1]
        direction = "lower" if lower_is_better(metric) else "higher"
        table = study_table(record, f"recon_{short}", f"Test {short.upper()} ({direction} is better)",
                            {metric: short}, None)
        if table is not None:
            out.append(table)
    return out


def probe_table(record: SweepRecord) -> Table | None:
    metrics: dict[str, tuple[str, ...]] = {}
    for m in record.metric_columns:
        parts = m.split("/")
        if len(parts) == 3 and parts[0] == "probe" and parts[2] in ("acc", "train_acc", "val_acc"):
            split = {"acc": "test", "train_acc": "train", "val_acc": "val"}[parts[2]]
            metrics[m] = parts[1] if not _has_splits(record) else f"{parts[1]} ({split})"
    return study_table(record, "probes", "Probe accuracy on the test split (higher is better)"
                       if not _has_splits(record) else "Probe accuracy: fitted rows / validation / test",
                       metrics, "probe")


def _has_splits(record: SweepRecord) -> bool:
    return any(m.endswith("/train_acc") for m in record.metric_columns)


def clustering_table(record: SweepRecord) -> Table | None:
    metrics = {m: f"{m.split('/')[1]} {m.split('/')[2].upper()}" for m in record.metric_columns
               if m.startswith("cluster/") and m.split("/")[-1] in ("ari", "nmi")}
    return study_table(record, "clustering", "Clustering of the test embeddings against the labels: ARI / NMI "
                       "(higher is better)", metrics, "method")


def generative_table(record: SweepRecord) -> Table | None:
    metrics = {m: m for m in record.metric_columns if m.startswith(("gen/", "latent/"))}
    return study_table(record, "generative", "Generative and latent metrics", metrics, "quantity")


def val_test_table(record: SweepRecord) -> Table | None:
    """Each final ``val/<m>`` (the last epoch's) beside ``test/<m>``, for every m that has both."""
    metrics: dict[str, str] = {}
    for m in record.metric_columns:
        short = m[len("val/"):]
        if m.startswith("val/") and "/" not in short and f"test/{short}" in record.metric_columns:
            metrics[m], metrics[f"test/{short}"] = f"{short} (val)", f"{short} (test)"
    return study_table(record, "val_test", "Validation (last epoch) and test values", metrics, "measure")


def params_table(record: SweepRecord) -> Table | None:
    """Parameter counts (``model/params`` = total; ``model/params/<part>`` or ``model/params_<part>``)."""
    metrics = {m: (m[len(PARAM_COUNT):].strip("/_") or "total") for m in record.metric_columns
               if m.startswith(PARAM_COUNT)}
    return study_table(record, "params", "Parameter counts", metrics, "part")


def all_tables(record: SweepRecord) -> list[Table]:
    tables = reconstruction_tables(record)
    tables += [t for t in (val_test_table(record), probe_table(record), clustering_table(record),
                           generative_table(record), params_table(record)) if t]
    return tables


def table_markdown(table: Table, replicate: str | None) -> str:
    cells = table.cells.copy()
    index_names = list(cells.index.names)
    header = [n or "" for n in index_names] + [
        (f"latent {c}" if isinstance(c, int | float | np.integer) else str(c)) for c in cells.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(index_names) + "---:|" * len(cells.columns)]
    for key, row in cells.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        lines.append("| " + " | ".join(str(k) for k in key) + " | " + " | ".join(row.tolist()) + " |")
    note = ""
    if replicate == "dataset.fold":
        note = "\nCells: mean ± standard deviation over the cross-validation folds."
    elif replicate:
        note = "\nCells: mean ± 95% confidence interval (Student t) over the training seeds."
    return f"### {table.title}\n\n" + "\n".join(lines) + "\n" + note + "\n"


# --------------------------------------------------------------------------------------------------------------
# Pareto front


def pareto_mask(error: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """True where no other point has error <= and accuracy >= with one of them strictly better."""
    n = len(error)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = (error <= error[i]) & (accuracy >= accuracy[i]) & ((error < error[i]) | (accuracy > accuracy[i]))
        mask[i] = not dominated.any()
    return mask


def pareto_axes(record: SweepRecord) -> tuple[str, str] | None:
    """(reconstruction error metric, probe accuracy metric): the sweep's own objectives when it has them."""
    done = record.finished
    available = [m for m in record.metric_columns if m in done and done[m].notna().any()]
    errors = [m for m in record.spec.search.metrics if m in available and m.startswith("test/")
              and lower_is_better(m)]
    errors += [m for m in ("test/mse", "test/bce", "test/mae") if m in available]
    accs = [m for m in record.spec.search.metrics if m in available and re.fullmatch(r"probe/[^/]+/acc", m)]
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
    for key, group in _groups(done, keys):
        g = group.groupby(LATENT)[metric].agg(["mean", "std", "count"]).dropna(subset=["mean"]).sort_index()
        if g.empty:
            continue
        label = _label(key, keys) or metric
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
        for key, group in _groups(done, keys):
            label = _label(key, keys) or probe
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
    front = pareto_mask(error, acc)
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


# --------------------------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    out_dir: Path
    files: list[Path]
    record: SweepRecord
    best: dict[str, dict[str, Any]]


def best_rows(record: SweepRecord) -> dict[str, dict[str, Any]]:
    """For each search metric, the finished trial with the best value."""
    done = record.finished
    out = {}
    for metric, mode in record.spec.search.metrics.items():
        if metric not in done or done[metric].notna().sum() == 0:
            continue
        idx = done[metric].idxmin() if mode == "min" else done[metric].idxmax()
        out[metric] = done.loc[idx].to_dict()
    return out


def best_trial_figures(record: SweepRecord, best: dict[str, dict[str, Any]], out_dir: Path
                       ) -> list[tuple[str, Path]]:
    """The figures each best trial drew (its MLflow ``figures/*.png``: the study's reconstructions, latent plots,
    traversals, ...), copied to ``out_dir/<trial id>/`` so that the report shows them beside its own plots. One
    copy per trial when it is best on several metrics; a trial that drew none adds nothing."""
    out: list[tuple[str, Path]] = []
    client = tracking.client(record.uri)
    for row in {row["trial_id"]: row for row in best.values()}.values():
        run_id = row["run_id"]
        names = [a.path for a in tracking._retry(lambda r=run_id: client.list_artifacts(r, "figures"))
                 if not a.is_dir and a.path.endswith(".png")]
        if not names:
            continue
        target = out_dir / str(row["trial_id"])
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:  # one download of the folder, then its PNGs moved up
            local = Path(tracking._retry(lambda r=run_id, t=tmp: client.download_artifacts(r, "figures", t)))
            for name in sorted(Path(n).name for n in names):
                path = target / name
                shutil.move(local / name, path)
                out.append((f"trial {row['trial_id']} ({_config_text(row, record)}): "
                            f"{path.stem.replace('_', ' ')}", path))
    return out


def make_report(record: SweepRecord, out_dir: str | Path, log: bool = True, command: str | None = None) -> Report:
    """Write every table, plot and the summary of ``record`` to ``out_dir`` (created); log them on the parent
    run under ``report/`` when ``log``."""
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
    from aesweep.report_curves import plot_loss_curves

    figures += [(f"loss curves per configuration ({p.stem.replace('_', ' ')})", p)
                for p in plot_loss_curves(record, plots)]
    pareto = plot_pareto(record, plots / "pareto_front.png")
    if pareto is not None:
        figures.append(("Pareto front: reconstruction error vs probe accuracy", pareto[0]))
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

    (out / "summary.md").write_text(_summary_md(record, tables, figures, best, pareto, importance, out, command))
    files.insert(0, out / "summary.md")
    if log:
        c = tracking.client(record.uri)
        for path in files:
            rel = path.relative_to(out).parent
            artifact_dir = "report" if str(rel) == "." else f"report/{rel}"
            tracking._retry(lambda p=path, a=artifact_dir: c.log_artifact(record.parent_run_id, str(p), a))
    return Report(out, files, record, best)


def _config_text(row: dict[str, Any], record: SweepRecord) -> str:
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
        lines += ["| objective | value | trial | configuration | run |", "|---|---:|---|---|---|"]
        for metric, row in best.items():
            lines.append(f"| {metric} ({spec.search.metrics[metric]}) | {_fmt(float(row[metric]))} | "
                         f"{row['trial_id']} | {_config_text(row, record)} | `{row['run_id']}` |")
    else:
        lines.append("No finished trial reports the search metrics yet.")
    if pareto is not None and len(pareto[1]) > 1:
        lines += ["", f"Pareto front ({len(pareto[1])} trials, `pareto_front.csv`): "
                  + "; ".join(_config_text(r, record) for r in pareto[1].to_dict("records")[:8])]
    if importance is not None:
        lines += ["", "Parameter importance (fANOVA, " + str(importance['metric'].iloc[0]) + "): "
                  + ", ".join(f"{p} {v:.2f}" for p, v in zip(importance['param'], importance['importance'], strict=True))]
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        lines += ["", "## Failed trials", "", "| trial | configuration | reason |", "|---|---|---|"]
        for row in failed.to_dict("records"):
            lines.append(f"| {row['trial_id']} | {_config_text(row, record)} | {str(row['reason'])[:200]} |")
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


# --------------------------------------------------------------------------------------------------------------
# Finding a sweep


def locate(name_or_path: str, storage: str | None = None, tracking_uri: str | None = None
           ) -> tuple[str, str, SweepSpec | None]:
    """(tracking URI, parent run id, spec if known locally) of a sweep given by its storage directory, its name
    under ``storage``, or its name in MLflow (the newest parent run tagged ``aesweep.sweep = NAME``).

    Raises FileNotFoundError with one line naming where it looked."""
    from aesweep.sweep import SweepState

    try:
        state = SweepState.load(name_or_path, storage)
    except FileNotFoundError as err:
        local_error = str(err)
    else:
        uri = tracking.resolve_uri(None, tracking_uri) if tracking_uri else state.uri
        spec = state.spec.model_copy()
        spec._source, spec._data = state.spec_file or None, state.spec.data
        return uri, state.parent_run_id, spec
    uri = tracking.resolve_uri(None, tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        # Reading must not create an empty store as a side effect.
        raise FileNotFoundError(f"{local_error}; and there is no MLflow store at {uri}")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines about the store's tables
    c = tracking.client(uri)
    name = Path(name_or_path).name
    try:
        experiments = tracking._retry(lambda: c.search_experiments())
        runs = tracking._retry(lambda: c.search_runs(
            [e.experiment_id for e in experiments], f"tags.`{tracking.SWEEP_TAG}` = '{name}'",
            order_by=["attributes.start_time DESC"], max_results=20)) if experiments else []
    except Exception as err:  # an unreachable server, a store that is not MLflow's
        raise FileNotFoundError(f"{local_error}; and MLflow at {uri} could not be read ({err})") from None
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        raise FileNotFoundError(f"{local_error}; and MLflow at {uri} has no sweep named {name}")
    return uri, parents[0].info.run_id, None
