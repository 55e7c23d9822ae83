#!/bin/bash
# Issue 14, 2026-12-03 evening: fmnist-001-contrastive (the contrastive probe below raw pixels, investigated:
# temperature x crop padding) then fmnist-003-depth (arm b, D_z = 2 at 1..8 layers), two trials at a time.
C=/work/runs-14/code-4f2fba1; PY=/work/main/.venv/bin/python
SHARED_STORE="--storage /work/runs-14/ray --tracking-uri sqlite:////work/runs-14/mlflow.db"
SHARED="$SHARED_STORE --set resources.cpu=1 --set resources.gpu=0 --set search.max_concurrent=2"
cd $C; export PYTHONPATH=$C AESWEEP_DATA=/work/runs-14/data
log() { echo "$(date -u +%H:%M:%S) $*" >> /work/runs-14/times.log; }
report() { nice -n 19 $PY -m aesweep report $1 $SHARED_STORE --out /work/runs-14/reports/$1 --no-log >> /work/runs-14/$1.log 2>&1; log "reported $1 rc=$?"; }

name=fmnist-001-contrastive; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set train.epochs=100 --set objective.variant=contrastive --set model.head_widths=[] --set model.head_dropout=0.0 \
  --set 'objective.contrastive.temperature={grid: [0.1, 0.5, 1.0]}' \
  --set 'objective.contrastive.augment_pad={grid: [0, 1, 3]}' > /work/runs-14/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name

name=fmnist-003-depth; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/ae-vae.yaml --stage depth --stage fashion --name $name $SHARED \
  --set dataset.train_size=20000 --set dataset.folds=2 --set 'dataset.fold={grid: [0, 1]}' --set train.epochs=40 \
  --set 'train.early_stopping={patience: 5, monitor: val/loss}' > /work/runs-14/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
