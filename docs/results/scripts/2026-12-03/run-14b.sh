#!/bin/bash
# fmnist-001 was killed at 08:53 by Ray's memory monitor (another process on the machine took 20 GB); resume it
# after run-14.sh's chain.
. "$(dirname "$0")/../env.sh"; code 5c7b1c2
while pgrep -f run-14.sh > /dev/null; do sleep 20; done
log "resume fmnist-001"; s=$(date +%s)
nice -n 19 $PY -m aesweep resume $RUNS/ray/fmnist-001 > $RUNS/fmnist-001-resume.log 2>&1
log "end fmnist-001 resume rc=$? wall=$(( $(date +%s) - s ))s"
nice -n 19 $PY -m aesweep report fmnist-001 $SHARED_STORE --out $RUNS/reports/fmnist-001 --no-log >> $RUNS/fmnist-001-resume.log 2>&1
log "reported fmnist-001 rc=$?"
