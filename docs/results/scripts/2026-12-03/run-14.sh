#!/bin/bash
# Issue 14 real-data runs of session 2026-12-03, one after another on one core, nice'd.
set -u
. "$(dirname "$0")/../env.sh"; code 5c7b1c2
SHARED="$SHARED_STORE --set resources.cpu=1 --set resources.gpu=0"  # this session set max_concurrent per run
run() { name=$1; shift; log "start $name"; s=$(date +%s)
  nice -n 19 $PY -m aesweep run "$@" --name $name $SHARED > $RUNS/$name.log 2>&1; rc=$?
  log "end $name rc=$rc wall=$(( $(date +%s) - s ))s"
  nice -n 19 $PY -m aesweep report $name $SHARED_STORE --out $RUNS/reports/$name --no-log >> $RUNS/$name.log 2>&1
  log "reported $name rc=$?"; }
# 001 (epochs: the study's 20-30 'depending on convergence'; here up to 100, early stopping patience 5 decides)
# 001, MNIST arm on Fashion-MNIST (54k train / 6k val / 10k test), with PCA-128 and raw-pixel baselines in the grid
run fmnist-001 sweeps/paradigms.yaml --set dataset.name=fashion_mnist --set train.epochs=100 \
  --set 'objective.variant={grid: [ae, classifier, contrastive, pca, raw_pixels]}' --set search.max_concurrent=1
# 003 arms (c) priors and (d) betas: MNIST's 2-layer, D_z = 2 VAE on Fashion-MNIST, 3 folds of 20k (13.3k / 6.7k)
run fmnist-003-priors sweeps/ae-vae.yaml --stage priors --stage fashion --set dataset.train_size=20000 \
  --set dataset.folds=3 --set 'dataset.fold={grid: [0, 1, 2]}' --set train.epochs=40 \
  --set 'train.early_stopping={patience: 5, monitor: val/loss}' --set search.max_concurrent=1
run fmnist-003-betas sweeps/ae-vae.yaml --stage betas --stage fashion --set dataset.train_size=20000 \
  --set dataset.folds=3 --set 'dataset.fold={grid: [0, 1, 2]}' --set train.epochs=40 \
  --set 'train.early_stopping={patience: 5, monitor: val/loss}' --set search.max_concurrent=1
# 004, the MNIST arm (3-conv AE and classification-guided) on a 12k Fashion-MNIST subset, with baselines
run fmnist-004 sweeps/paradigms-supcon.yaml --set dataset.name=fashion_mnist --set dataset.train_size=12000 --set train.epochs=100 \
  --set 'objective.variant={grid: [ae, classifier, pca, raw_pixels]}' --set search.max_concurrent=1
# 003 arm (b) depth at D_z = 2, AE and VAE, 1..8 layers, 2 folds of 20k
run fmnist-003-depth sweeps/ae-vae.yaml --stage depth --stage fashion --set dataset.train_size=20000 \
  --set dataset.folds=2 --set 'dataset.fold={grid: [0, 1]}' --set train.epochs=40 \
  --set 'train.early_stopping={patience: 5, monitor: val/loss}' --set search.max_concurrent=1
log all-done
