#!/bin/bash
# Issue 30, 2026-12-08: the disentangle study's search at the scale of 2 CPU cores: 3,000 of the shapes' training
# images (2,700 / 300), conv width 0.25, 20 epochs, 16 random trials over the families x latent size x each
# family's weight, MO-ASHA (grace 3, reduction 3) on val/mse against val/dis/mig; every other setting the file's.
# Beside run-29a.sh's 001 re-run (both nice 19: four trials on two cores while both run).
. "$(dirname "$0")/../env.sh"; code 9977096
name=shapes-disentangle; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/disentangle.yaml --name $name $SHARED \
  --set dataset.train_size=3000 --set dataset.test_size=1000 --set model.width=0.25 --set train.epochs=20 \
  --set search.num_samples=16 > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
log "run-30a done"
