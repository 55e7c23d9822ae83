#!/bin/bash
# Issue 14, 2026-12-03 night: fmnist-000-fixed, study 000's four AEs to the 50-epoch cap on the code whose conv
# decoder ends in a bare transposed conv (3116490); fmnist-000-converged (4f2fba1, BN + ReLU there) crawled.
. "$(dirname "$0")/../env.sh"; code 3116490

name=fmnist-000-fixed; log "start $name"; s=$(date +%s)
nice -n 19 $PY -m aesweep run sweeps/cifar.yaml --name $name $SHARED \
  --set dataset.name=fashion_mnist --set dataset.train_size=8000 --set dataset.val_fraction=0.1 \
  --set model.width=0.25 --set 'model.latent_dim={grid: [256, 64, 16]}' \
  --set 'objective.variant={grid: [ae, sparse, denoising, vae, pca]}' \
  --set train.epochs=50 --set eval.protocol=fast --set eval.subsample=10000 --set eval.slow_subsample=10000 \
  --set eval.cluster_subsample=2000 --set 'eval.clustering=[kmeans, gmm, hdbscan]' \
  --set 'eval.figures=[reconstructions, latent_pca]' > $RUNS/$name.log 2>&1
log "end $name rc=$? wall=$(( $(date +%s) - s ))s"; report $name
