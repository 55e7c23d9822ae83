#!/usr/bin/env bash
# What every run script under docs/results/scripts/ shares: where things go, which code runs, and the helpers that
# time a run and report it. Source it from a run script: `. "$(dirname "$0")/../env.sh"; code <commit>`.
#
# Parameters (environment variables; the defaults rerun a script from a clone of this repository):
#   RUNS        the runs' Ray storage, MLflow store, logs and reports   (default: runs/ under the repository root)
#   PY          the Python with aesweep's dependencies                   (default: the repository's .venv/bin/python)
#   CONCURRENT  trials at a time, where a script does not fix it         (default: 2)
#   AESWEEP_DATA  the datasets' root                                     (default: $RUNS/data)
# The runs of 2026-12-03..04 used RUNS=/work/runs-14 on a 2-core machine (see ../README.md).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
RUNS=${RUNS:-$REPO/runs}
PY=${PY:-$REPO/.venv/bin/python}
BIN=$(dirname "$PY")
CONCURRENT=${CONCURRENT:-2}
export AESWEEP_DATA=${AESWEEP_DATA:-$RUNS/data}
mkdir -p "$RUNS/reports" "$RUNS/diag"
SHARED_STORE="--storage $RUNS/ray --tracking-uri sqlite:///$RUNS/mlflow.db"
SHARED="$SHARED_STORE --set resources.cpu=1 --set resources.gpu=0 --set search.max_concurrent=$CONCURRENT"

# code COMMIT: run on a frozen copy of COMMIT's package (git archive into $RUNS/code-COMMIT), so that later commits
# cannot change a sweep mid-run; the working directory is that copy from here on.
code() {
  C=$RUNS/code-$1
  if [ ! -d "$C" ]; then mkdir -p "$C" && git -C "$REPO" archive "$1" | tar -x -C "$C"; fi
  cd "$C" && export PYTHONPATH=$C
}
log() { echo "$(date -u +%H:%M:%S) $*" >> "$RUNS/times.log"; }
# report NAME: the sweep's tables and plots into $RUNS/reports/NAME (copied to docs/results/NAME by hand).
report() { nice -n 19 "$PY" -m aesweep report "$1" $SHARED_STORE --out "$RUNS/reports/$1" --no-log >> "$RUNS/$1.log" 2>&1
  log "reported $1 rc=$?"; }
# wait_for TEXT: block until times.log has a line with TEXT (scripts that ran one after another)
wait_for() { until grep -q "$1" "$RUNS/times.log" 2>/dev/null; do sleep 20; done; }
