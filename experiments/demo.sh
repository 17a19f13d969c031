#!/bin/sh
# The main job: the shipped Fashion-MNIST DDPM (checkpoints/fashion-mnist-ddpm) probed on real
# Fashion-MNIST, on a class-stratified subset, beside two baselines: raw pixels and the same UNet
# randomly initialised. Caches go to out/demo (not versioned); tables and figures to figures/.
set -e
OUT=${OUT:-out/demo}
FIG=${FIG:-figures}
TRAIN=${TRAIN_LIMIT:-2000}
TEST=${TEST_LIMIT:-1000}
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
SUBSET="--data fashion-mnist --train-limit $TRAIN --test-limit $TEST"
mkdir -p "$OUT" "$FIG/random-init"

probekit layers --model "$MODEL"
probekit extract --model pixels $SUBSET --out "$OUT/pixels.h5" --overwrite
probekit extract --model "$MODEL" --random-init $SUBSET --grid --out "$OUT/random-init.h5" --overwrite
probekit extract --model "$MODEL" $SUBSET --grid --out "$OUT/ddpm.h5" --overwrite
probekit info "$OUT/ddpm.h5"

probekit probe --cache "$OUT/pixels.h5" --probes linear,logreg,knn --out "$FIG/results_pixels.csv"
probekit probe --cache "$OUT/random-init.h5" --probes linear,knn --out "$FIG/results_random-init.csv"
probekit probe --cache "$OUT/ddpm.h5" --probes linear,knn --out "$FIG/results_ddpm.csv"

probekit plot --results "$FIG/results_ddpm.csv" --out "$FIG"
probekit plot --results "$FIG/results_random-init.csv" --out "$FIG/random-init"
probekit tsne --cache "$OUT/ddpm.h5" --results "$FIG/results_ddpm.csv" --out "$FIG/tsne_best_linear.png"
cp "$MODEL/samples.png" "$FIG/samples.png"
probekit summary --results "$FIG/results_pixels.csv" "$FIG/results_random-init.csv" "$FIG/results_ddpm.csv"
