"""A sweep's scheduler section (ASHA, MO-ASHA) checked with file and line: metrics reported every epoch, rungs that
fit the epochs."""
from __future__ import annotations

import pytest

from aesweep.service import driver
from aesweep.service.moasha import MOASHAScheduler
from aesweep.spec.checks import scheduler_metrics
from aesweep.spec.load import load_spec, parse_spec
from aesweep.spec.problems import SpecError
from tests.conftest import cli
from tests.support.moasha_sweeps import BASE


def test_default_metrics_are_the_per_epoch_counterparts_of_the_search_metrics():
    spec = parse_spec(BASE + "  scheduler: moasha\neval: {online_probe_every: 1}\n", "spec.yaml")
    assert scheduler_metrics(spec) == {"val/mse": "min", "val/probe/knn/acc": "max"}
    spec = parse_spec(BASE + "  scheduler: {name: moasha, metrics: {val/loss: min, val/psnr: max}}\n")
    assert scheduler_metrics(spec) == {"val/loss": "min", "val/psnr": "max"}
    assert isinstance(driver._scheduler(spec), MOASHAScheduler)


@pytest.mark.parametrize("tail, expected", [
    ("  scheduler:\n    name: moasha\n    metrics: {val/mse: minimize}\n",
     "spec.yaml:8: search.scheduler.metrics.val/mse: input should be 'min' or 'max'"),
    ("  scheduler:\n    name: moasha\n    metrics: {val/mse: min, test/mse: min}\n",
     "spec.yaml:8: search.scheduler.metrics.test/mse: test/mse is reported once, at the end of a trial: a "
     "scheduler needs a metric reported every epoch; its per-epoch counterpart is val/mse"),
    ("  scheduler:\n    name: moasha\n    metrics:\n      val/mse: min\n      val/probe/knn/acc: max\n"
     "eval: {online_probe_every: 2}\n",
     "spec.yaml:10: search.scheduler.metrics.val/probe/knn/acc: val/probe/knn/acc comes from the online probe, "
     "which runs every 2 epoch(s); a scheduler needs it every epoch: set eval.online_probe_every: 1"),
    ("  scheduler: moasha\n",  # defaulted from probe/knn/acc: the online probe is off
     "spec.yaml:5: search.metrics.probe/knn/acc: val/probe/knn/acc comes from the online probe, which runs off; "
     "a scheduler needs it every epoch: set eval.online_probe_every: 1"),
    ("  scheduler: {name: moasha, metric: val/mse}\n",
     "spec.yaml:6: search.scheduler.metric: moasha takes metrics: {name: min|max, ...} (metric and mode are "
     "asha's)"),
    ("  scheduler: {name: moasha, grace_period: 50, metrics: {val/mse: min}}\n",
     "spec.yaml:6: search.scheduler.grace_period: grace period 50 is longer than the 4 epoch(s) a trial trains"),
    ("  scheduler: {name: moasha, grace_period: 3, max_t: 2, metrics: {val/mse: min}}\n",
     "spec.yaml:6: search.scheduler.grace_period: grace period 3 is longer than max_t 2"),
    ("  scheduler: {name: moasha, reduction_factor: 1, metrics: {val/mse: min}}\n",
     "spec.yaml:6: search.scheduler.reduction_factor: input should be greater than 1"),
    ("  scheduler: {name: asha, metrics: {val/mse: min}}\n",
     "spec.yaml:6: search.scheduler.metrics: asha ranks on one metric: give metric and mode (metrics is for "
     "moasha)"),
    ("  scheduler: {name: none, metrics: {val/mse: min}}\n",
     "spec.yaml:6: search.scheduler.metrics: metrics are set but no scheduler is chosen"),
])

def test_bad_scheduler_specs_are_rejected_with_file_and_line(tmp_path, tail, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + tail)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert [str(p).replace(str(tmp_path) + "/", "") for p in err.value.problems] == [expected]


def test_a_search_metric_without_per_epoch_counterpart_needs_explicit_metrics():
    text = "name: s\nsearch:\n  metrics: {test/mse: min, probe/mlp/acc: max}\n  scheduler: moasha\n"
    with pytest.raises(SpecError, match=r"spec.yaml:3: search.metrics.probe/mlp/acc: probe/mlp/acc has no "
                                        r"per-epoch counterpart"):
        parse_spec(text, "spec.yaml")


def test_validate_exits_2_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "  scheduler:\n    name: moasha\n    metrics: {val/mse: up}\n")
    done = cli("validate", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{path}:8: search.scheduler.metrics.val/mse: input should be 'min' or 'max'" in done.stdout + done.stderr
