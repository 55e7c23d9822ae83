#!/bin/bash
# Issue 14, 2026-12-04: fmnist-004-fixed, study 004's MNIST arm rerun on the code whose conv decoder ends in a
# bare transposed conv (3116490, here 3e0fb8c); fmnist-004 (5c7b1c2) ran on the BN + ReLU tail. Same command as
# fmnist-004 but two trials at a time.
. "$(dirname "$0")/../env.sh"; code 3e0fb8c
name=fmnist-004-fixed; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms-supcon.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set dataset.train_size=12000 --set train.epochs=100 \
  --set 'objective.variant={grid: [ae, classifier, pca, raw_pixels]}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
