#!/bin/bash
# PCA-2 baseline on the same 3 folds of 20k as fmnist-003-priors / -betas (same seeded split), after run-14b.
. "$(dirname "$0")/../env.sh"; code 5c7b1c2
SHARED="$SHARED_STORE --set resources.cpu=1 --set resources.gpu=0"  # this session set max_concurrent per run
while pgrep -f "run-14b?.sh" > /dev/null; do sleep 20; done
name=fmnist-003-pca2; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/ae-vae.yaml --stage baselines --stage fashion --name $name $SHARED \
  --set model.latent_dim=2 --set model.depth=2 --set dataset.train_size=20000 --set dataset.folds=3 \
  --set 'dataset.fold={grid: [0, 1, 2]}' --set search.max_concurrent=1 > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"
nice -n 19 $PY -m aesweep report $name $SHARED_STORE --out $RUNS/reports/$name --no-log >> $RUNS/$name.log 2>&1
log "reported $name rc=$?"
