#!/bin/bash
# Issue 14, 2026-12-04: study 002 on the shipped sweeps/shapes.yaml of 0670276 (Table II nets, the AE with a linear
# output, lecun_normal init), one trial at a time on both cores (torch threads 2). shapes-002-ae-t2 (26cd5d2,
# sigmoid output) was stopped by hand at epoch ~25, at the mean image.
. "$(dirname "$0")/../env.sh"; code 0670276
ONE="$SHARED_STORE --set resources.cpu=2 --set resources.gpu=0 --set search.max_concurrent=1"
# The AE: sweeps/shapes.yaml as shipped (200 epochs, batch 64, no early stopping).
name=shapes-002-ae-linear; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/shapes.yaml --name $name $ONE > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
# The VAE with the study's init (shapes-002-vae-t2 ran on PyTorch's): --stage vae, early stopping as there.
name=shapes-002-vae-lecun; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/shapes.yaml --stage vae --name $name $ONE \
  --set 'train.early_stopping={patience: 20, monitor: val/loss}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
