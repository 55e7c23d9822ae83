"""Loss curves of a sweep: training and validation loss per epoch, one panel per configuration.

``plot_loss_curves(record, out_dir)`` reads every finished trial's ``train/loss`` and ``val/loss`` histories from
MLflow (step = epoch, as ``train.run_trial`` reports them) and draws one panel per configuration (every varied
param, latent size included; replicates over seeds or folds are the same configuration, one thin line each),
``CONFIGS_PER_FILE`` panels per PNG: ``loss_curves.png``, ``loss_curves_2.png``, ... The beta-VAE study's
"training loss goes down while validation loss increases" is the reading these are for.

A part of ``report`` (split out to keep that module one screenful shorter); it imports MLflow only through
``tracking``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aesweep.report.record import SweepRecord
from aesweep.report.tables import config_groups, config_label
from aesweep.service import tracking

__all__ = ["CONFIGS_PER_FILE", "CURVE_METRICS", "metric_histories", "plot_loss_curves"]

CURVE_METRICS = {"train/loss": ("training", "C0"), "val/loss": ("validation", "C1")}
CONFIGS_PER_FILE = 12  # 4 x 3 panels: readable at the size summary.md shows a plot


def metric_histories(record: SweepRecord, run_ids: list[str], keys: tuple[str, ...] = tuple(CURVE_METRICS)
                     ) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run_id: {metric: [(step, value), ...] sorted by step}}`` from MLflow; a metric a run never logged is
    absent. A step logged twice (a resumed trial repeating an epoch) keeps its last value."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run_id in run_ids:
        curves = {}
        for key in keys:
            history = tracking.metric_history(record.uri, run_id, key)
            by_step = {}
            for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
                by_step[int(m.step)] = float(m.value)
            if by_step:
                curves[key] = sorted(by_step.items())
        out[run_id] = curves
    return out


def plot_loss_curves(record: SweepRecord, out_dir: Path) -> list[Path]:
    """The loss-curve PNGs of the finished trials (none when no trial logged a per-epoch loss)."""
    done = record.finished
    if done.empty:
        return []
    histories = metric_histories(record, list(done["run_id"]))
    keys = list(record.varied)
    configs = []
    for key, group in config_groups(done, keys):
        runs = [r for r in group["run_id"] if histories.get(r)]
        if runs:
            configs.append((config_label(key, keys) or record.name, runs))
    if not configs:
        return []
    from matplotlib.figure import Figure

    paths = []
    for page, start in enumerate(range(0, len(configs), CONFIGS_PER_FILE)):
        chunk = configs[start:start + CONFIGS_PER_FILE]
        cols = min(len(chunk), 4)
        rows = math.ceil(len(chunk) / cols)
        fig = Figure(figsize=(max(3.6 * cols, 6.4), 2.9 * rows + 0.8), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax in axes[len(chunk):]:
            ax.set_visible(False)
        for ax, (label, runs) in zip(axes, chunk, strict=False):
            _draw(ax, [histories[r] for r in runs])
            ax.set_title(label, fontsize=8)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
        pages = math.ceil(len(configs) / CONFIGS_PER_FILE)
        fig.suptitle(f"{record.name}: training and validation loss per epoch, one panel per configuration"
                     + (f" ({page + 1}/{pages})" if pages > 1 else ""))
        path = out_dir / ("loss_curves.png" if page == 0 else f"loss_curves_{page + 1}.png")
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _draw(ax: Any, curves: list[dict[str, list[tuple[int, float]]]]) -> None:
    """Every replicate's curves on one axis; each metric labelled once."""
    labelled = set()
    epochs: set[int] = set()
    for trial in curves:
        for key, (name, colour) in CURVE_METRICS.items():
            if key not in trial:
                continue
            steps, values = zip(*trial[key], strict=True)
            # A one-epoch series (a fitted baseline's single value, a 1-epoch trial) is a line of zero length:
            # only a marker makes it visible.
            ax.plot(steps, values, color=colour, lw=1.2, alpha=0.8 if len(curves) > 1 else 1.0,
                    marker="o" if len(steps) == 1 else None, label=None if key in labelled else name)
            labelled.add(key)
            epochs.update(steps)
    from matplotlib.ticker import FixedLocator, MaxNLocator

    # Epochs are whole numbers; with one epoch MaxNLocator still ticks fractions around it (0.95 ... 1.05).
    ax.xaxis.set_major_locator(FixedLocator(sorted(epochs)) if len(epochs) == 1 else MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
