# Issue 14, session of 2026-12-04 (evening, a new machine): what every run script of this session shares (paths, stores, log/report helpers).
# Usage: C=/work/runs-14/code-<sha>; . /work/runs-14/common.sh
PY=/work/main/.venv/bin/python
SHARED_STORE="--storage /work/runs-14/ray --tracking-uri sqlite:////work/runs-14/mlflow.db"
SHARED="$SHARED_STORE --set resources.cpu=1 --set resources.gpu=0 --set search.max_concurrent=1"
cd $C; export PYTHONPATH=$C AESWEEP_DATA=/work/runs-14/data
log() { echo "$(date -u +%H:%M:%S) $*" >> /work/runs-14/times.log; }
report() { nice -n 19 $PY -m aesweep report $1 $SHARED_STORE --out /work/runs-14/reports/$1 --no-log >> /work/runs-14/$1.log 2>&1; log "reported $1 rc=$?"; }
