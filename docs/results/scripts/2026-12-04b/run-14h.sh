#!/bin/bash
# Issue 14, 2026-12-04: study 002 with the shipped file's nets (Table II widths, dropout), one trial at a time on
# both cores (torch threads 2). Code 26cd5d2: generative metrics against every image, 10,000 prior samples. Waits for fmnist-004-fixed (run-14g.sh) to be reported first.
. "$(dirname "$0")/../env.sh"; code 26cd5d2
ONE="$SHARED_STORE --set resources.cpu=2 --set resources.gpu=0 --set search.max_concurrent=1"
wait_for "reported fmnist-004-fixed"
# The VAE: sweeps/shapes.yaml --stage vae as shipped (1000 epochs, batch 512), plus early stopping (patience 20
# on val/loss) so that a plateau ends it inside this session.
name=shapes-002-vae-t2; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/shapes.yaml --stage vae --name $name $ONE \
  --set 'train.early_stopping={patience: 20, monitor: val/loss}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
name=shapes-002-baselines; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/shapes.yaml --stage baselines --name $name $ONE > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
# The AE: sweeps/shapes.yaml as shipped (200 epochs, batch 64, no early stopping).
name=shapes-002-ae-t2; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/shapes.yaml --name $name $ONE > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
