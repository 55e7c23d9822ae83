#!/bin/bash
# Issue 14, 2026-12-04: does the init explain why study 002's AE (Table II widths, dropout 0.2, latent noise 0.2,
# MMD 0.1) stays at the mean image? sweeps/shapes.yaml on 3,000 images (2,700 / 300), 8 epochs, the real trainer
# (aesweep train-one, no Ray), code on PYTHONPATH = /work/main at the commit that adds model.init.
. "$(dirname "$0")/../env.sh"; cd "$REPO"; export PYTHONPATH=$REPO OMP_NUM_THREADS=1
for init in torch lecun_normal; do
  nice -n 5 .venv/bin/python -m aesweep train-one sweeps/shapes.yaml --set model.init=$init \
    --set dataset.train_size=3000 --set train.epochs=8 --set 'eval.generative=[]' --set 'eval.figures=[]' \
    --set 'eval.probes=[]' --out $RUNS/diag/init-$init > $RUNS/diag/init-$init.log 2>&1 &
done
wait
