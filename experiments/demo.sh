#!/bin/sh
# The main job on the embedded default: Fashion-MNIST, a class-stratified subset, probed with the
# raw-pixel baseline and a randomly initialised small UNet (experiments/models/unet-small).
# Caches go to out/demo (not versioned); tables and figures to figures/.
set -e
OUT=${OUT:-out/demo}
FIG=${FIG:-figures}
TRAIN=${TRAIN_LIMIT:-2000}
TEST=${TEST_LIMIT:-1000}
mkdir -p "$OUT" "$FIG"

probekit layers --model experiments/models/unet-small --random-init
probekit extract --model pixels --data fashion-mnist \
  --train-limit "$TRAIN" --test-limit "$TEST" --out "$OUT/pixels.h5" --overwrite
probekit extract --model experiments/models/unet-small --random-init --data fashion-mnist --grid \
  --train-limit "$TRAIN" --test-limit "$TEST" --out "$OUT/unet-small-random.h5" --overwrite
probekit info "$OUT/unet-small-random.h5"

probekit probe --cache "$OUT/pixels.h5" --probes linear,logreg,knn --out "$FIG/results_pixels.csv"
probekit probe --cache "$OUT/unet-small-random.h5" --probes linear,knn --out "$FIG/results_unet-small-random.csv"

probekit plot --results "$FIG/results_unet-small-random.csv" --out "$FIG"
probekit tsne --cache "$OUT/unet-small-random.h5" --results "$FIG/results_unet-small-random.csv" --out "$FIG/tsne_best_linear.png"
probekit summary --results "$FIG/results_pixels.csv" "$FIG/results_unet-small-random.csv"
