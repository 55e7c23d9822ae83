#!/bin/bash
# fmnist-001 was killed at 08:53 by Ray's memory monitor (another process on the machine took 20 GB); resume it
# after run-14.sh's chain.
C=/work/runs-14/code-5c7b1c2; PY=/work/main/.venv/bin/python
SHARED_STORE="--storage /work/runs-14/ray --tracking-uri sqlite:////work/runs-14/mlflow.db"
cd $C; export PYTHONPATH=$C AESWEEP_DATA=/work/runs-14/data
log() { echo "$(date -u +%H:%M:%S) $*" >> /work/runs-14/times.log; }
while pgrep -f run-14.sh > /dev/null; do sleep 20; done
log "resume fmnist-001"; s=$(date +%s)
nice -n 19 $PY -m aesweep resume /work/runs-14/ray/fmnist-001 > /work/runs-14/fmnist-001-resume.log 2>&1
log "end fmnist-001 resume rc=$? wall=$(( $(date +%s) - s ))s"
nice -n 19 $PY -m aesweep report fmnist-001 $SHARED_STORE --out /work/runs-14/reports/fmnist-001 --no-log >> /work/runs-14/fmnist-001-resume.log 2>&1
log "reported fmnist-001 rc=$?"
