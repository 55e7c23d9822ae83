"""Per trial of a sweep in $RUNS's MLflow: epochs trained, whether early stopping ended it, and the relative
change of val/loss over its last 5 epochs (negative = still improving)."""
import sys
import os

from mlflow import MlflowClient

c = MlflowClient(f"sqlite:///{os.environ.get('RUNS', 'runs')}/mlflow.db")
for name in sys.argv[1:]:
    exp = c.get_experiment_by_name(name)
    runs = [r for r in c.search_runs([exp.experiment_id], max_results=500) if "mlflow.parentRunId" in r.data.tags]
    changes, stopped, n = [], 0, 0
    for r in runs:
        h = sorted((m.step, m.value) for m in c.get_metric_history(r.info.run_id, "val/loss"))
        if len(h) < 6:
            continue
        n += 1
        planned = int(float(r.data.params.get("train.epochs", 0)))
        stopped += len(h) < planned
        changes.append((h[-1][1] - h[-6][1]) / abs(h[-6][1]))
    if n:
        changes.sort()
        print(f"{name}: {n} trained trials, {stopped} ended by early stopping; val/loss change over the last 5 "
              f"epochs: median {changes[len(changes)//2]:+.2%}, worst {changes[0]:+.2%} .. {changes[-1]:+.2%}")
