"""The study tables: a metric by configuration (rows) x latent size (columns), replicates aggregated (mean +- 95%
CI over seeds, mean +- std over folds), the best value per column in bold; CSV and Markdown.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aesweep.report.record import LATENT, PARAM_COUNT, SweepRecord, lower_is_better

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


def format_value(value: float, metric: str = "") -> str:
    if not math.isfinite(value):
        return "-"
    if metric.startswith(PARAM_COUNT):
        return f"{value:,.0f}"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}" if magnitude < 10 else f"{value:.2f}"


def config_groups(frame: pd.DataFrame, keys: list[str], sort: bool = True) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """``(values of keys, rows)`` per distinct combination of ``keys`` (NaN kept as a value); the whole frame
    under ``()`` when there are no keys. The values are always a tuple, whatever pandas' version returns."""
    if not keys:
        yield (), frame
        return
    for key, group in frame.groupby(keys, dropna=False, sort=sort):
        yield (key if isinstance(key, tuple) else (key,)), group


def config_label(values: Iterable[Any], keys: list[str]) -> str:
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
    for key, group in config_groups(done, group_keys, sort=False):
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
                text = format_value(mean, metric) + (f" ± {spread:.2g}" if spread_shown else "")
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


def disentanglement_table(record: SweepRecord) -> Table | None:
    metrics = {m: m.split("/", 1)[1] for m in record.metric_columns if m.startswith("dis/")}
    return study_table(record, "disentanglement", "Disentanglement of the test codes (higher is more disentangled; "
                       "evaluation/disentanglement.py)", metrics, "measure")


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
                           generative_table(record), disentanglement_table(record), params_table(record)) if t]
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
    counts = sorted({int(n) for n in table.stats["n"].dropna()}) if "n" in table.stats else []
    n_text = "" if not counts else (f"n = {counts[0]} per cell" if len(counts) == 1
                                    else f"n = {counts[0]}..{counts[-1]} per cell, each cell's n in stats.csv")
    if replicate == "dataset.fold":
        note = f"\nCells: mean ± standard deviation over the cross-validation folds ({n_text})."
    elif replicate:
        note = f"\nCells: mean ± 95% confidence interval (Student t) over the training seeds ({n_text})."
    elif counts:
        note = "\nCells: one trial each (n = 1): no interval; differences here are single readings."
    return f"### {table.title}\n\n" + "\n".join(lines) + "\n" + note + "\n"



