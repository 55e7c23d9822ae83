#!/bin/bash
# Issue 14, 2026-12-03 evening: fmnist-001-contrastive (the contrastive probe below raw pixels, investigated:
# temperature x crop padding) then fmnist-003-depth (arm b, D_z = 2 at 1..8 layers), two trials at a time.
. "$(dirname "$0")/../env.sh"; code 4f2fba1

name=fmnist-001-contrastive; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set train.epochs=100 --set objective.variant=contrastive --set model.head_widths=[] --set model.head_dropout=0.0 \
  --set 'objective.contrastive.temperature={grid: [0.1, 0.5, 1.0]}' \
  --set 'objective.contrastive.augment_pad={grid: [0, 1, 3]}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name

name=fmnist-003-depth; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/ae-vae.yaml --stage depth --stage fashion --name $name $SHARED \
  --set dataset.train_size=20000 --set dataset.folds=2 --set 'dataset.fold={grid: [0, 1]}' --set train.epochs=40 \
  --set 'train.early_stopping={patience: 5, monitor: val/loss}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
