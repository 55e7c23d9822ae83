#!/bin/bash
# Issue 14, 2026-12-04 evening: study 001's contrastive probe below raw pixels, the untested cause (2): views too
# alike. fmnist-001-contrastive's setting (temperature 0.5, batch 128 as the study, jitter 0.2) with SimCLR's random
# resized crop (objective.augment_scale, 037de56) of at least 8% / 20% / 50% of the area instead of the padded crop.
# Waits for run-14l.sh, then restarts the Ray head on this code (the head's workers import the code it started with).
. "$(dirname "$0")/../env.sh"; code 037de56
export RAY_ADDRESS=127.0.0.1:6390
wait_for "run-14l done"
$BIN/ray stop > $RUNS/ray-stop.log 2>&1
nice -n 19 $BIN/ray start --head --port=6390 --num-cpus=2 --num-gpus=0 --include-dashboard=false \
  --disable-usage-stats > $RUNS/ray-head-m.log 2>&1; log "ray head (code-037de56) rc=$?"
name=fmnist-001-views; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms.yaml --name $name $SHARED --set search.max_concurrent=2 \
  --set dataset.name=fashion_mnist --set train.epochs=100 --set objective.variant=contrastive \
  --set model.head_widths=[] --set model.head_dropout=0.0 --set objective.contrastive.temperature=0.5 \
  --set objective.contrastive.augment_pad=0 --set 'objective.contrastive.augment_scale={grid: [0.08, 0.2, 0.5]}' \
  > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
$BIN/ray stop >> $RUNS/ray-stop.log 2>&1
log "run-14m done"
