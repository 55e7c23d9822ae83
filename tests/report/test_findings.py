"""A study's claims evaluated on trials: intervals equal to their textbook formulas, verdicts that follow them, and
findings files whose errors name the file, the line and the field."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aesweep.report import findings as fnd
from aesweep.spec.findings import Claim, Findings, load_findings
from aesweep.spec.problems import SpecError

SEEDS = [0, 1, 2, 3]


def trials(cells: dict[tuple[str, int], list[float]], metric: str = "test/mse") -> pd.DataFrame:
    """One row per (variant, latent size, seed): ``cells[(variant, latent)]`` holds the metric per seed."""
    rows = [{"objective.variant": variant, "model.latent_dim": latent, "train.seed": seed, metric: value}
            for (variant, latent), values in cells.items() for seed, value in zip(SEEDS, values, strict=False)]
    return pd.DataFrame(rows)


def claim(**fields) -> Claim:
    return Claim.model_validate({"id": "c", "finding": "f", **fields})


def compare(relation: str = "less", metric: str = "test/mse", **extra) -> Claim:
    return claim(relation=relation, metric=metric, a={"where": {"objective.variant": "ae"}},
                 b={"where": {"objective.variant": "pca"}}, **extra)


def test_a_paired_difference_has_the_textbook_t_interval():
    frame = trials({("ae", 8): [0.10, 0.12, 0.11, 0.13], ("pca", 8): [0.15, 0.14, 0.18, 0.16]})
    (outcome,) = fnd.evaluate_claim(compare(), frame)
    d = np.array([0.10, 0.12, 0.11, 0.13]) - np.array([0.15, 0.14, 0.18, 0.16])
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / math.sqrt(4)
    assert outcome.estimate == pytest.approx(d.mean())
    assert (outcome.low, outcome.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert (outcome.low, outcome.high) == pytest.approx(stats.ttest_rel(
        [0.10, 0.12, 0.11, 0.13], [0.15, 0.14, 0.18, 0.16]).confidence_interval(0.95))  # the reference
    assert outcome.n == 4 and outcome.statistic.startswith("paired t over 4")
    assert outcome.verdict == fnd.REPRODUCED  # the interval lies below zero: ae < pca, as claimed
    (flipped,) = fnd.evaluate_claim(compare("greater"), frame)
    assert flipped.verdict == fnd.CONTRADICTED


def test_sides_without_shared_seeds_use_welchs_interval():
    frame = trials({("ae", 8): [0.10, 0.12, 0.11], ("pca", 8): [0.15, 0.14, 0.18, 0.16]})
    frame.loc[frame["objective.variant"] == "pca", "train.seed"] += 10  # other seeds: nothing to pair
    (outcome,) = fnd.evaluate_claim(compare(), frame)
    a, b = np.array([0.10, 0.12, 0.11]), np.array([0.15, 0.14, 0.18, 0.16])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
    dof = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    assert (outcome.low, outcome.high) == pytest.approx((a.mean() - b.mean() - half, a.mean() - b.mean() + half))
    assert (outcome.low, outcome.high) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95))
    assert outcome.statistic.startswith("Welch")


def test_an_exactly_equal_pair_is_inconclusive_not_nan():
    frame = trials({("ae", 8): [0.10, 0.12, 0.11], ("pca", 8): [0.10, 0.12, 0.11]})  # a param with no effect
    (outcome,) = fnd.evaluate_claim(compare(), frame)
    assert (outcome.estimate, outcome.low, outcome.high) == (0.0, 0.0, 0.0)
    assert outcome.verdict == fnd.INCONCLUSIVE


def test_an_interval_across_zero_is_inconclusive_and_one_seed_decides_nothing():
    frame = trials({("ae", 8): [0.10, 0.16, 0.12, 0.15], ("pca", 8): [0.13, 0.12, 0.14, 0.13]})
    assert fnd.evaluate_claim(compare(), frame)[0].verdict == fnd.INCONCLUSIVE
    one = trials({("ae", 8): [0.10], ("pca", 8): [0.90]})  # a large gap, but one seed: no interval
    (outcome,) = fnd.evaluate_claim(compare(), one)
    assert outcome.verdict == fnd.INCONCLUSIVE and "one replicate" in outcome.statistic


def test_per_gives_one_verdict_per_value_and_missing_sides_are_not_tested():
    frame = trials({("ae", 8): [0.10, 0.11, 0.12], ("pca", 8): [0.20, 0.21, 0.22],
                    ("ae", 16): [0.30, 0.31, 0.32], ("pca", 16): [0.20, 0.21, 0.22], ("ae", 32): [0.1, 0.1, 0.1]})
    outcomes = fnd.evaluate_claim(compare(per="model.latent_dim"), frame)
    assert [(o.group, o.verdict) for o in outcomes] == [
        ("model.latent_dim=8", fnd.REPRODUCED), ("model.latent_dim=16", fnd.CONTRADICTED),
        ("model.latent_dim=32", fnd.NOT_TESTED)]
    assert fnd.evaluate_claim(compare(metric="test/ssim"), frame)[0].verdict == fnd.NOT_TESTED


def test_within_a_tolerance_of_the_studys_number():
    frame = trials({("ae", 8): [0.101, 0.099, 0.100, 0.102]})
    near = claim(relation="within", metric="test/mse", value=0.10, tolerance=0.01)
    far = claim(relation="within", metric="test/mse", value=0.20, tolerance=0.01)
    wide = claim(relation="within", metric="test/mse", value=0.10, tolerance=0.001)
    assert [fnd.evaluate_claim(c, frame)[0].verdict for c in (near, far, wide)] == [
        fnd.REPRODUCED, fnd.CONTRADICTED, fnd.INCONCLUSIVE]


def test_a_trend_is_the_least_squares_slope_with_its_interval():
    # Accuracy rises with log2(latent size): 0.70, 0.75, 0.80 at 8, 16, 32, with seed noise.
    frame = trials({("ae", 8): [0.70, 0.71, 0.69], ("ae", 16): [0.75, 0.76, 0.74], ("ae", 32): [0.80, 0.79, 0.81]},
                   metric="probe/knn/acc")
    rises = claim(relation="rises_with", metric="probe/knn/acc", along="model.latent_dim", log=True)
    (outcome,) = fnd.evaluate_claim(rises, frame)
    fit = stats.linregress(np.log2(frame["model.latent_dim"]), frame["probe/knn/acc"])
    assert outcome.estimate == pytest.approx(fit.slope) and outcome.estimate == pytest.approx(0.05, abs=1e-3)
    assert outcome.verdict == fnd.REPRODUCED
    falls = claim(relation="falls_with", metric="probe/knn/acc", along="model.latent_dim", log=True)
    assert fnd.evaluate_claim(falls, frame)[0].verdict == fnd.CONTRADICTED


def test_a_peak_is_judged_by_bootstrap_over_the_seeds():
    peaked = trials({("ae", 8): [0.70, 0.71, 0.69], ("ae", 64): [0.85, 0.86, 0.84], ("ae", 256): [0.80, 0.79, 0.81]},
                    metric="probe/mlp/acc")
    at_64 = claim(relation="peaks_in", metric="probe/mlp/acc", along="model.latent_dim", values=[64])
    at_256 = claim(relation="peaks_in", metric="probe/mlp/acc", along="model.latent_dim", values=[256])
    assert fnd.evaluate_claim(at_64, peaked)[0].verdict == fnd.REPRODUCED
    assert fnd.evaluate_claim(at_256, peaked)[0].verdict == fnd.CONTRADICTED
    tied = trials({("ae", 8): [0.70, 0.71, 0.69], ("ae", 64): [0.80, 0.86, 0.74], ("ae", 256): [0.80, 0.74, 0.86]},
                  metric="probe/mlp/acc")
    (outcome,) = fnd.evaluate_claim(at_64, tied)
    assert outcome.verdict == fnd.INCONCLUSIVE and 0.05 < outcome.estimate < 0.95


def test_sanity_rows_are_reported_apart_and_untestable_findings_say_why(tmp_path):
    frame = trials({("ae", 8): [0.10, 0.11, 0.12], ("pca", 8): [0.20, 0.21, 0.22]})
    findings = Findings.model_validate({"claims": [
        {"id": "ae-beats-pca", "finding": "the AE reconstructs better than PCA", "kind": "sanity",
         "relation": "less", "metric": "test/mse", "a": {"where": {"objective.variant": "ae"}},
         "b": {"where": {"objective.variant": "pca"}}},
        {"id": "cifar-levels", "finding": "CIFAR-10 accuracy of 0.55 at d = 256", "testable": False,
         "reason": "CIFAR-10 cannot be downloaded on this machine"}]})
    outcomes = fnd.evaluate(findings, frame)
    assert fnd.counts(outcomes)[fnd.NOT_TESTABLE] == 1 and fnd.counts(outcomes)[fnd.REPRODUCED] == 0
    assert fnd.counts(outcomes, "sanity")[fnd.REPRODUCED] == 1
    md, csv = fnd.write_findings(outcomes, tmp_path, "sweeps/x.findings.yaml")
    text = md.read_text()
    assert text.index("## The study's findings") < text.index("## Sanity checks")
    assert "cannot be downloaded" in text
    assert list(pd.read_csv(csv)["verdict"]) == [fnd.REPRODUCED, fnd.NOT_TESTABLE]


@pytest.mark.parametrize("body, expected", [
    ("claims:\n  - id: a\n    finding: f\n    relation: more\n    metric: m\n",
     "x.findings.yaml:4: claims.0.relation: input should be 'greater', 'less', 'within', 'rises_with', "
     "'falls_with' or 'peaks_in'"),
    ("claims:\n  - id: a\n    finding: f\n    relation: less\n    metric: m\n",
     "x.findings.yaml:2: claims.0: relation less compares side a with side b: give b"),
    ("claims:\n  - id: a\n    finding: f\n    testable: false\n",
     "x.findings.yaml:2: claims.0: a claim with testable: false says why in reason"),
    ("claims:\n  - id: a\n    finding: f\n    relation: within\n    metric: m\n    value: 1\n    tolerance: -1\n",
     "x.findings.yaml:7: claims.0.tolerance: input should be greater than or equal to 0"),
    ("claims:\n  - {id: a, finding: f, relation: rises_with, metric: m, along: x}\n"
     "  - {id: a, finding: g, relation: rises_with, metric: m, along: x}\n",
     "x.findings.yaml:1: claims: claim id 'a' is used twice"),
])
def test_a_bad_findings_file_names_file_line_and_field(tmp_path, body, expected):
    path = tmp_path / "x.findings.yaml"
    path.write_text(body)
    with pytest.raises(SpecError) as err:
        load_findings(path)
    assert [str(p).replace(f"{tmp_path}/", "") for p in err.value.problems] == [expected]


def test_claims_can_be_evaluated_on_the_trials_csv_of_earlier_reports(tmp_path, capsys):
    # Two arms reported apart (their trials.csv), read together as the study's claims need.
    trials({("ae", 8): [0.10, 0.11, 0.12]}).assign(status="finished").to_csv(tmp_path / "ae.csv", index=False)
    pca = trials({("pca", 8): [0.20, 0.21, 0.22]}).assign(status="finished")
    pd.concat([pca, pca.head(1).assign(status="failed", **{"test/mse": 0.0})]).to_csv(tmp_path / "pca.csv",
                                                                                       index=False)
    claims = tmp_path / "claims.yaml"
    claims.write_text("claims:\n  - id: ae-over-pca\n    finding: f\n    relation: less\n    metric: test/mse\n"
                      "    a: {where: {objective.variant: ae}}\n    b: {where: {objective.variant: pca}}\n")
    assert fnd.main([str(claims), str(tmp_path / "ae.csv"), str(tmp_path / "pca.csv"), "--out",
                     str(tmp_path / "out")]) == 0
    row = pd.read_csv(tmp_path / "out" / "findings.csv").iloc[0]
    assert row["verdict"] == fnd.REPRODUCED and row["n"] == 3  # the failed trial is not read
    assert capsys.readouterr().out.strip().endswith("findings: 1 reproduced")
    claims.write_text("claims: []\n")
    assert fnd.main([str(claims), str(tmp_path / "ae.csv"), "--out", str(tmp_path / "bad")]) == 2
    assert "claims: list should have at least 1 item" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
