#!/bin/bash
# Issue 14, 2026-12-04: study 001's contrastive probe below raw pixels, the untested cause (1): the negatives.
# fmnist-001-contrastive's best cell (temperature 0.5, 1-px crop; batch 128 as the study) at batch 128 (the control on this code), 512 and 2048
# (NT-Xent's in-batch negatives 2(B - 1): 254 -> 1,022 and 4,094), everything else the same. Waits for run-14i.sh.
. "$(dirname "$0")/../env.sh"; code 09d13ba
wait_for "reported shapes-002-vae-lecun"
name=fmnist-001-negatives; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set train.epochs=100 --set objective.variant=contrastive --set model.head_widths=[] --set model.head_dropout=0.0 \
  --set objective.contrastive.temperature=0.5 --set objective.contrastive.augment_pad=1 \
  --set 'train.batch_size={grid: [128, 512, 2048]}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
