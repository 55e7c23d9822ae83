"""A study's claims evaluated on a sweep's trials: one computed verdict per claim (and per group), never by hand.

The verdict follows the 95% confidence interval of the claimed quantity over the trials' seeds (or folds):
``reproduced`` where the interval excludes the null in the claimed direction, ``contradicted`` where it excludes it
the other way, ``inconclusive`` otherwise, and ``not tested`` where the sweep has no trials (or one per side) to
decide with. The statistic of each kind:

- greater / less: the difference of side a and side b: the paired t interval where the two sides are the same
  replicates (equal seeds or folds, one trial each), else Welch's (Welch-Satterthwaite degrees of freedom; the
  intervals scipy's ``ttest_rel`` and ``ttest_ind(equal_var=False)`` give, tested against them, and exact where
  the spread is zero, where scipy returns NaN).
- within: side a's mean (one-sample t interval) against ``value +- tolerance``: reproduced when the interval lies
  inside the band, contradicted when it lies outside it.
- rises_with / falls_with: the least-squares slope of the metric on ``along`` (log2 with ``log``), its t interval
  over every trial (``scipy.stats.linregress``).
- peaks_in: the share of 2,000 seeded bootstrap resamples (replicates resampled within each value of ``along``)
  whose best mean falls in ``values``: reproduced at >= 95%, contradicted at <= 5%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from aesweep.report.record import REPLICATE_PARAMS
from aesweep.report.tables import format_value
from aesweep.spec.findings import COMPARISONS, TRENDS, Claim, Findings, Scalar, Side

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED, NOT_TESTABLE = (
    "reproduced", "contradicted", "inconclusive", "not tested", "not testable here")
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass
class Outcome:
    """One claim's verdict on one group of trials (``group``: the ``per`` param's value, or "")."""

    claim: Claim
    group: str
    verdict: str
    ours: str  # the sides' means and intervals, as text
    statistic: str  # what the verdict was computed from
    estimate: float = math.nan  # the claimed quantity: a difference, a mean, a slope, a bootstrap share
    low: float = math.nan
    high: float = math.nan
    n: int = 0


def _matches(frame: pd.DataFrame, filters: dict[str, Scalar | list[Scalar]]) -> pd.Series:
    keep = pd.Series(True, index=frame.index)
    for param, wanted in filters.items():
        if param not in frame:
            return pd.Series(False, index=frame.index)
        accepted = wanted if isinstance(wanted, list) else [wanted]
        # MLflow stores params as text; compare as text so 64 == "64" and True == "True".
        keep &= frame[param].astype(str).isin([str(v) for v in accepted])
    return keep


def _side(frame: pd.DataFrame, claim: Claim, side: Side) -> pd.DataFrame:
    """The side's trials that have its metric: the replicate columns and the metric as ``value``."""
    metric = claim.metric_of(side)
    if metric not in frame:
        return pd.DataFrame(columns=["value"])
    rows = frame[_matches(frame, claim.filters(side))]
    rows = rows[pd.to_numeric(rows[metric], errors="coerce").notna()]
    return rows.copy().assign(value=pd.to_numeric(rows[metric]))  # copy: one block, not a fragmented frame


def _t_interval(estimate: float, standard_error: float, dof: float) -> tuple[float, float]:
    """The 95% t interval; exact (zero width) when the spread is zero, where scipy's tests return NaN."""
    if standard_error == 0:
        return estimate, estimate
    half = float(stats.t.ppf(0.975, dof)) * standard_error
    return estimate - half, estimate + half


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its one-sample 95% t interval (NaN with fewer than two values)."""
    mean = float(np.mean(values)) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    low, high = _t_interval(mean, float(np.std(values, ddof=1)) / math.sqrt(len(values)), len(values) - 1)
    return mean, low, high


def _describe(values: np.ndarray, metric: str) -> str:
    mean, low, high = _mean_ci(values)
    if len(values) < 2:
        return f"{format_value(mean, metric)} (n={len(values)})"
    return f"{format_value(mean, metric)} [{format_value(low, metric)}, {format_value(high, metric)}] (n={len(values)})"


def _replicates(rows: pd.DataFrame) -> list[str]:
    return [c for c in REPLICATE_PARAMS if c in rows and rows[c].notna().all()]


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """The two sides' values matched by replicate (seed, fold), when each replicate has one trial on each side."""
    keys = [k for k in _replicates(a) if k in _replicates(b)]
    if not keys or a.duplicated(keys).any() or b.duplicated(keys).any():
        return None
    merged = a[[*keys, "value"]].merge(b[[*keys, "value"]], on=keys, suffixes=("_a", "_b"))
    if len(merged) != len(a) or len(merged) != len(b):
        return None
    return merged["value_a"].to_numpy(float), merged["value_b"].to_numpy(float)


def _verdict_from_interval(low: float, high: float, positive_is_claimed: bool) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if low > 0:
        return REPRODUCED if positive_is_claimed else CONTRADICTED
    if high < 0:
        return CONTRADICTED if positive_is_claimed else REPRODUCED
    return INCONCLUSIVE


def _compare(claim: Claim, a: pd.DataFrame, b: pd.DataFrame, group: str) -> Outcome:
    assert claim.b is not None
    ours = (f"a: {_describe(a['value'].to_numpy(float), claim.metric_of(claim.a))}; "
            f"b: {_describe(b['value'].to_numpy(float), claim.metric_of(claim.b))}")
    paired = _paired(a, b)
    if paired is not None:
        values_a, values_b = paired
        n = len(values_a)
        estimate = float(np.mean(values_a - values_b))
        if n < 2:
            return Outcome(claim, group, INCONCLUSIVE, ours, "one replicate: no interval", estimate, n=n)
        _, low, high = _mean_ci(values_a - values_b)  # the paired t interval: one sample of differences
        statistic = f"paired t over {n} shared replicates"
    else:
        values_a, values_b = a["value"].to_numpy(float), b["value"].to_numpy(float)
        n = min(len(values_a), len(values_b))
        estimate = float(np.mean(values_a) - np.mean(values_b))
        if n < 2:
            return Outcome(claim, group, INCONCLUSIVE, ours, "fewer than two trials on a side: no interval",
                           estimate, n=n)
        var_a, var_b = np.var(values_a, ddof=1) / len(values_a), np.var(values_b, ddof=1) / len(values_b)
        spread = var_a + var_b
        dof = spread ** 2 / (var_a ** 2 / (len(values_a) - 1) + var_b ** 2 / (len(values_b) - 1)) if spread else 1.0
        low, high = _t_interval(estimate, math.sqrt(spread), dof)  # Welch-Satterthwaite degrees of freedom
        statistic = f"Welch t, {len(values_a)} vs {len(values_b)} trials"
    low, high = float(low), float(high)
    ours += f"; a - b {estimate:+.4g} [{low:+.4g}, {high:+.4g}]"
    verdict = _verdict_from_interval(low, high, positive_is_claimed=claim.relation == "greater")
    return Outcome(claim, group, verdict, ours, statistic, estimate, low, high, n)


def _within(claim: Claim, a: pd.DataFrame, group: str) -> Outcome:
    assert claim.value is not None and claim.tolerance is not None
    values = a["value"].to_numpy(float)
    mean, low, high = _mean_ci(values)
    ours = _describe(values, claim.metric_of(claim.a))
    band = (claim.value - claim.tolerance, claim.value + claim.tolerance)
    statistic = f"one-sample t interval against {claim.value:g} +- {claim.tolerance:g}"
    if len(values) < 2:
        verdict = INCONCLUSIVE
        statistic = "one replicate: no interval"
    elif band[0] <= low and high <= band[1]:
        verdict = REPRODUCED
    elif high < band[0] or low > band[1]:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return Outcome(claim, group, verdict, ours, statistic, mean, low, high, len(values))


def _along(claim: Claim, a: pd.DataFrame) -> pd.Series:
    assert claim.along is not None
    x = pd.to_numeric(a[claim.along], errors="coerce") if claim.along in a else pd.Series(np.nan, index=a.index)
    return np.log2(x) if claim.log else x


def _trend(claim: Claim, a: pd.DataFrame, group: str) -> Outcome:
    x = _along(claim, a)
    keep = x.notna() & np.isfinite(x)
    x, y = x[keep].to_numpy(float), a.loc[keep, "value"].to_numpy(float)
    n, levels = len(x), len(set(x.tolist()))
    axis = f"log2 {claim.along}" if claim.log else claim.along
    means = a[keep].groupby(claim.along)["value"].mean()
    ours = ", ".join(f"{k}: {format_value(v, claim.metric_of(claim.a))}" for k, v in means.items())
    if levels < 2 or n < 3:
        return Outcome(claim, group, NOT_TESTED if levels < 2 else INCONCLUSIVE, ours,
                       f"{levels} value(s) of {claim.along}, {n} trial(s): no slope interval", n=n)
    fit = stats.linregress(x, y)
    half = float(stats.t.ppf(0.975, n - 2) * fit.stderr)
    low, high = fit.slope - half, fit.slope + half
    verdict = _verdict_from_interval(low, high, positive_is_claimed=claim.relation == "rises_with")
    ours += f"; slope {fit.slope:+.4g} [{low:+.4g}, {high:+.4g}] per unit of {axis}"
    return Outcome(claim, group, verdict, ours, f"least-squares slope on {axis}, {n} trials", float(fit.slope),
                   float(low), float(high), n)


def _peak(claim: Claim, a: pd.DataFrame, group: str) -> Outcome:
    assert claim.along is not None and claim.values is not None
    by_level = {level: rows["value"].to_numpy(float) for level, rows in a.groupby(claim.along)}
    metric = claim.metric_of(claim.a)
    ours = ", ".join(f"{k}: {_describe(v, metric)}" for k, v in by_level.items())
    wanted = {str(v) for v in claim.values}
    if len(by_level) < 2:
        return Outcome(claim, group, NOT_TESTED, ours, f"{len(by_level)} value(s) of {claim.along}")
    if min(len(v) for v in by_level.values()) < 2:
        return Outcome(claim, group, INCONCLUSIVE, ours, "one replicate at some value: no bootstrap",
                       n=min(len(v) for v in by_level.values()))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    levels = list(by_level)
    resampled = np.stack([rng.choice(by_level[k], size=(BOOTSTRAP_RESAMPLES, len(by_level[k]))).mean(axis=1)
                          for k in levels], axis=1)  # (resamples, levels)
    best = resampled.argmax(axis=1) if claim.mode == "max" else resampled.argmin(axis=1)
    share = float(np.mean([str(levels[i]) in wanted for i in best]))
    verdict = REPRODUCED if share >= 0.95 else CONTRADICTED if share <= 0.05 else INCONCLUSIVE
    return Outcome(claim, group, verdict, ours,
                   f"best at {sorted(wanted)} in {share:.1%} of {BOOTSTRAP_RESAMPLES} bootstrap resamples",
                   share, n=min(len(v) for v in by_level.values()))


def evaluate_claim(claim: Claim, frame: pd.DataFrame) -> list[Outcome]:
    """The claim's outcomes on ``frame`` (a sweep's finished trials: params and metrics as columns)."""
    if not claim.testable:
        return [Outcome(claim, "", NOT_TESTABLE, "", claim.reason)]
    groups: list[tuple[str, pd.DataFrame]]
    frame = frame[_matches(frame, claim.where)]  # the claim's own trials, before they are grouped
    if claim.per is None:
        groups = [("", frame)]
    elif claim.per not in frame:
        return [Outcome(claim, "", NOT_TESTED, "", f"no trial has {claim.per}")]
    else:
        groups = [(f"{claim.per}={value}", rows) for value, rows in frame.groupby(claim.per, sort=True)]
    out = []
    for group, rows in groups:
        a = _side(rows, claim, claim.a)
        if claim.relation in COMPARISONS:
            assert claim.b is not None
            b = _side(rows, claim, claim.b)
            if a.empty or b.empty:
                empty = "a" if a.empty else "b"
                out.append(Outcome(claim, group, NOT_TESTED, "", f"no trial of this sweep is on side {empty}"))
                continue
            out.append(_compare(claim, a, b, group))
        elif a.empty:
            out.append(Outcome(claim, group, NOT_TESTED, "", "no trial of this sweep is on side a"))
        elif claim.relation == "within":
            out.append(_within(claim, a, group))
        elif claim.relation in TRENDS:
            out.append(_trend(claim, a, group))
        else:
            out.append(_peak(claim, a, group))
    return out


def evaluate(findings: Findings, frame: pd.DataFrame) -> list[Outcome]:
    return [outcome for claim in findings.claims for outcome in evaluate_claim(claim, frame)]


def counts(outcomes: list[Outcome], kind: str = "finding") -> dict[str, int]:
    """Verdicts of one kind of claim (findings or sanity checks), counted."""
    verdicts = [REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED, NOT_TESTABLE]
    return {v: sum(o.verdict == v and o.claim.kind == kind for o in outcomes) for v in verdicts}


def frame_of(outcomes: list[Outcome]) -> pd.DataFrame:
    return pd.DataFrame([{
        "id": o.claim.id, "group": o.group, "kind": o.claim.kind, "finding": o.claim.finding,
        "study": o.claim.study, "ours": o.ours, "estimate": o.estimate, "ci95_low": o.low, "ci95_high": o.high,
        "n": o.n, "statistic": o.statistic, "verdict": o.verdict} for o in outcomes])


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(outcomes: list[Outcome], source: str) -> str:
    lines = [f"# Findings\n\nClaims: `{source}`. Every verdict below is computed from the sweep's trials (95% "
             "intervals over seeds or folds; the statistic is named in each row): reproduced where the interval "
             "excludes the null in the claimed direction, contradicted where it excludes it the other way, "
             "inconclusive otherwise.\n"]
    for kind, title in (("finding", "The study's findings"), ("sanity", "Sanity checks (against baselines; not "
                                                                         "counted as findings)")):
        rows = [o for o in outcomes if o.claim.kind == kind]
        if not rows:
            continue
        tally = ", ".join(f"{v} {n}" for v, n in counts(outcomes, kind).items() if n)
        lines.append(f"## {title}\n\n{tally}\n")
        lines.append("| finding | the study's numbers | ours (mean [95% CI], n) | verdict | statistic |")
        lines.append("|---|---|---|---|---|")
        for o in rows:
            label = f"**{o.claim.id}**{f' ({o.group})' if o.group else ''}: {o.claim.finding}"
            lines.append(f"| {_md_cell(label)} | {_md_cell(o.claim.study)} | {_md_cell(o.ours)} | "
                         f"**{o.verdict}** | {_md_cell(o.statistic)} |")
        lines.append("")
    return "\n".join(lines)


def write_findings(outcomes: list[Outcome], out_dir: Path, source: str) -> list[Path]:
    """``findings.md`` and ``findings.csv`` under ``out_dir``."""
    md, csv = out_dir / "findings.md", out_dir / "findings.csv"
    md.write_text(findings_markdown(outcomes, source))
    frame_of(outcomes).to_csv(csv, index=False)
    return [md, csv]


def main(argv: list[str] | None = None) -> int:
    """``python -m aesweep.report.findings CLAIMS TRIALS.csv [TRIALS.csv ...] --out DIR``: the claims evaluated on
    the ``trials.csv`` of reports made earlier (one per arm of a study), without MLflow; exit 2 on a bad file."""
    import argparse
    import sys

    from aesweep.spec.findings import load_findings
    from aesweep.spec.problems import SpecError

    parser = argparse.ArgumentParser(prog="python -m aesweep.report.findings", description=main.__doc__)
    parser.add_argument("claims", type=Path)
    parser.add_argument("trials", type=Path, nargs="+", help="trials.csv of a report (aesweep report --out DIR)")
    parser.add_argument("--out", type=Path, required=True, help="folder for findings.md and findings.csv")
    args = parser.parse_args(argv)
    try:
        findings = load_findings(args.claims)
    except SpecError as err:
        print("\n".join(str(p) for p in err.problems), file=sys.stderr)
        return 2
    frames = []
    for path in args.trials:
        try:
            frames.append(pd.read_csv(path))
        except (OSError, pd.errors.ParserError) as err:
            print(f"{path}: {err}", file=sys.stderr)
            return 2
    trials = pd.concat(frames, ignore_index=True)
    if "status" in trials:
        trials = trials[trials["status"] == "finished"]
    outcomes = evaluate(findings, trials)
    args.out.mkdir(parents=True, exist_ok=True)
    source = f"{args.claims} on {', '.join(str(p) for p in args.trials)}"
    for path in write_findings(outcomes, args.out, source):
        print(path)
    tally = ", ".join(f"{n} {v}" for v, n in counts(outcomes).items() if n)
    print(f"findings: {tally or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
