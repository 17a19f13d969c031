#!/bin/sh
# Full-data run of the shipped checkpoint: all 60k train / 10k test images, the full default grid,
# every layer, beside the pixel and random-init baselines. Hours on a 2-core CPU; minutes on a GPU.
# Usage: PATH=.venv/bin:$PATH sh experiments/fmnist_full.sh   (writes experiments/results/fmnist_full_*.csv)
set -e
OUT=${OUT:-out/full}
RES=experiments/results
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
mkdir -p "$OUT" "$RES"
probekit extract --model pixels --data fashion-mnist --out "$OUT/pixels.h5" --overwrite
probekit extract --model "$MODEL" --random-init --data fashion-mnist --grid --batch-size 256 --out "$OUT/random-init.h5" --overwrite
probekit extract --model "$MODEL" --data fashion-mnist --grid --batch-size 256 --out "$OUT/ddpm.h5" --overwrite
probekit probe --cache "$OUT/pixels.h5" --probes linear,logreg,knn --out "$RES/fmnist_full_pixels.csv"
probekit probe --cache "$OUT/random-init.h5" --probes linear,knn --out "$RES/fmnist_full_random-init.csv"
probekit probe --cache "$OUT/ddpm.h5" --probes linear,knn --out "$RES/fmnist_full_ddpm.csv"
probekit summary --results "$RES/fmnist_full_pixels.csv" "$RES/fmnist_full_random-init.csv" "$RES/fmnist_full_ddpm.csv"
