#!/bin/bash
# Issue 14, 2026-12-03 night: fmnist-003-depth-pca2 (PCA-2 on the depth arm's 2 folds, the same-split baseline),
# then fmnist-000-converged (study 000's deterministic AEs to the study's 50-epoch cap, 256 first), two at a time.
. "$(dirname "$0")/../env.sh"; code 4f2fba1

name=fmnist-003-depth-pca2; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/ae-vae.yaml --stage baselines --stage fashion --name $name $SHARED \
  --set model.latent_dim=2 --set model.depth=2 --set dataset.train_size=20000 --set dataset.folds=2 \
  --set 'dataset.fold={grid: [0, 1]}' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name

name=fmnist-000-converged; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/cifar.yaml --name $name $SHARED \
  --set dataset.name=fashion_mnist --set dataset.train_size=8000 --set dataset.val_fraction=0.1 \
  --set model.width=0.25 --set 'model.latent_dim={grid: [256, 64, 16]}' \
  --set 'objective.variant={grid: [ae, sparse, denoising, pca, raw_pixels]}' \
  --set train.epochs=50 --set eval.protocol=fast --set eval.subsample=10000 --set eval.slow_subsample=10000 \
  --set eval.cluster_subsample=2000 --set 'eval.clustering=[kmeans, gmm, hdbscan]' \
  --set 'eval.figures=[reconstructions, latent_pca]' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
