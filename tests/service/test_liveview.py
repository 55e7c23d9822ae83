"""The live view of a running sweep (aesweep.service.liveview): the line it prints from what Tune reports."""
from __future__ import annotations

from types import SimpleNamespace

from aesweep.service import trainable
from aesweep.service.liveview import LiveState, render_line
from aesweep.spec.load import parse_spec
from tests.support.moasha_sweeps import BASE, result


def test_live_view_line_for_a_sweep_whose_search_metric_comes_at_the_end():
    spec = parse_spec(BASE + "  num_samples: 4\n  scheduler: moasha\neval: {online_probe_every: 1}\n")
    config = {"aesweep": {"spec": spec.model_dump_json(by_alias=True)}}

    def t(trial_id, status, last):
        return SimpleNamespace(trial_id=trial_id, status=status, last_result=last,
                               config={**config, "sample": int(trial_id[-1])})

    live = LiveState(spec, expected_trials=4)
    a, b = t("x_0", "RUNNING", {}), t("x_1", "RUNNING", {})
    live.observe(a, {**result(1, 0.05, 0.60), "training_iteration": 1, "time_this_iter_s": 2.0})
    live.observe(a, {**result(2, 0.04, 0.62), "training_iteration": 2, "time_this_iter_s": 2.0})
    # Tune updates last_result after the callbacks: the view goes by what it observed (epoch 2, not 1).
    a.last_result = {**result(1, 0.05, 0.60), "training_iteration": 1}
    live.observe(b, {**result(1, 0.09, 0.70), "training_iteration": 1, "time_this_iter_s": 2.0})
    line = render_line(live.view([a, b], 75.0))
    assert line.startswith("trials: 0 done, 2 running, 0 pending, 0 pruned, 0 failed  |  1:15 elapsed  |  ")
    # 4 trials x 4 epochs planned, 3 done; 13 to go at 2 s each, 2 at a time.
    assert "epochs 3/16, 2.0 s/epoch, ETA 0:13" in line
    assert "best val/mse 0.04 so far (x_0; no test/mse yet)" in line
    assert "Pareto front 2 (per epoch)" in line  # (0.04, 0.62) and (0.09, 0.70): neither dominates
    assert "running: x_0 2/4 val/mse 0.04, x_1 1/4 val/mse 0.09" in line
    # Once a trial has its final values, they replace the per-epoch best; the front is of the finished trials.
    a.status, a.last_result = "TERMINATED", {"epoch": 4, "test/mse": 0.03, "probe/knn/acc": 0.8,
                                             trainable.DONE: 1.0, "training_iteration": 4}
    live.observe(a, a.last_result)
    line = render_line(live.view([a, b], 80.0))
    assert "1 done, 1 running" in line and "best test/mse 0.03 (" in line and "Pareto front 1" in line
