#!/bin/bash
# Issue 14, 2026-12-04: which part of study 002's AE keeps it at the mean image: train-one on 3,000 images, 8 epochs,
# one setting changed per run. Usage: ablate.sh NAME --set ... (pairs run in the background, two at a time).
. "$(dirname "$0")/../env.sh"; cd "$REPO"; export PYTHONPATH=$REPO OMP_NUM_THREADS=1
name=$1; shift
nice -n 5 .venv/bin/python -m aesweep train-one sweeps/shapes.yaml "$@" \
  --set dataset.train_size=3000 --set train.epochs=8 --set 'eval.generative=[]' --set 'eval.figures=[]' \
  --set 'eval.probes=[]' --out $RUNS/diag/$name > $RUNS/diag/$name.log 2>&1
