#!/bin/bash
# Issue 14, 2026-12-04 evening (a new machine: the earlier runs' stores are gone, their reports are in docs/results).
# One Ray head with both cores; two sweeps on it at once, one core each:
#  (1) study 002's VAE exactly as shipped (--stage vae: 1,000 epochs, no early stopping, as the study), the run the
#      earlier session stopped at epoch 353;
#  (2) study 001's contrastive probe, the untested cause (1): the negatives. fmnist-001-contrastive's best cell
#      (temperature 0.5, 1-px crop) at batch 128 (the study's, the control), 512 and 2048.
. "$(dirname "$0")/../env.sh"; code a26d22f
export RAY_ADDRESS=127.0.0.1:6390
nice -n 19 $BIN/ray start --head --port=6390 --num-cpus=2 --num-gpus=0 --include-dashboard=false \
  --disable-usage-stats > $RUNS/ray-head.log 2>&1; log "ray head rc=$?"
vae=shapes-002-vae-1000; log "start $vae"
( s=$(date +%s); nice -n 19 $PY -m aesweep run sweeps/shapes.yaml --stage vae --name $vae $SHARED > $RUNS/$vae.log 2>&1
  log "end $vae rc=$? wall=$(( $(date +%s) - s ))s"; report $vae ) &
sleep 30
name=fmnist-001-negatives; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set train.epochs=100 --set objective.variant=contrastive --set model.head_widths=[] --set model.head_dropout=0.0 \
  --set objective.contrastive.temperature=0.5 --set objective.contrastive.augment_pad=1 \
  --set 'train.batch_size={grid: [128, 512, 2048]}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
wait
log "run-14k done"
