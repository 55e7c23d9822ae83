#!/bin/bash
# Issue 29, 2026-12-08: the first re-runs with three training seeds per cell (search.seeds: 3), the cheapest studies
# first: 004's AE / guided / baselines at 12,000 images (fmnist-004-fixed's command), then 001's base arm
# (fmnist-001's command). Same overrides as the one-seed runs they replace; two trials at a time on 2 cores.
. "$(dirname "$0")/../env.sh"; code ec992c0
name=fmnist-004-fixed-s3; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms-supcon.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set dataset.train_size=12000 --set train.epochs=100 \
  --set 'objective.variant={grid: [ae, classifier, pca, raw_pixels]}' --set search.seeds=3 > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
name=fmnist-001-s3; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set train.epochs=100 --set 'objective.variant={grid: [ae, classifier, contrastive, pca, raw_pixels]}' \
  --set search.seeds=3 > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
log "run-29a done"
