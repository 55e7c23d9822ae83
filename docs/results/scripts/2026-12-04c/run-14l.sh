#!/bin/bash
# Issue 14, 2026-12-04 evening: study 004's SupCon arm, the one its findings table had as "not testable here", on
# the CPU at a reduced scale: Fashion-MNIST, 3,000 training images (2,700 / 300), ResNet-18 at width 0.25
# (16-32-64-128 channels; ~250 img/s on one core against ~30 at width 1), everything else the shipped --stage
# supcon (SGD 0.05, batch 256, cosine with a 10-epoch warm-up, 100 epochs, temperature 0.07). Then the file's other
# models and baselines on the same 3,000 images, so that the accuracy table compares like with like.
# Waits for run-14k.sh's negatives (a core) and its VAE (the second core). On run-14k.sh's Ray head.
. "$(dirname "$0")/../env.sh"; code a26d22f
export RAY_ADDRESS=127.0.0.1:6390
wait_for "reported fmnist-001-negatives"
sc=fmnist-004-supcon; log "start $sc"
( s=$(date +%s); nice -n 19 $PY -m aesweep run sweeps/paradigms-supcon.yaml --stage supcon --name $sc $SHARED \
    --set dataset.name=fashion_mnist --set dataset.train_size=3000 --set model.width=0.25 > $RUNS/$sc.log 2>&1
  log "end $sc rc=$? wall=$(( $(date +%s) - s ))s"; report $sc ) &
wait_for "reported shapes-002-vae-1000"
name=fmnist-004-3k; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/paradigms-supcon.yaml --name $name $SHARED --set dataset.name=fashion_mnist \
  --set dataset.train_size=3000 --set train.epochs=100 \
  --set 'objective.variant={grid: [ae, classifier, pca, raw_pixels]}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
wait
log "run-14l done"
