#!/bin/sh
# The main job: the shipped Fashion-MNIST DDPM (checkpoints/fashion-mnist-ddpm) probed on real
# Fashion-MNIST, on a class-stratified subset, beside two baselines: raw pixels and the same UNet
# randomly initialised. Caches go to out/demo (not versioned); tables and figures to figures/.
#
# Budget (what the figures need, not more): the DDPM over 8 noise levels x all 27 layers; the
# random-init control at t = 0 only (its accuracy only falls with noise); pixels once. That is
# (8 + 1) x (TRAIN + TEST) = 18 000 image x grid-point forwards of a 1.15 GFLOP UNet, about
# 21 TFLOP at the default sizes: under 10 minutes on a 2-core CPU that runs the forward at
# 41 GFLOP/s (an AVX2-only EPYC), about 2 minutes where it runs at 160 forwards per second. Every cell is chosen on a 10 % validation split of train and reported on
# test; the comparisons at the end are paired tests on the same test images. Extraction is pinned
# to fp32 so that the README's numbers are the same on every machine (--precision auto would pick
# bf16 where the CPU runs it natively and faster, and move features by ~0.05 %).
set -e
OUT=${OUT:-out/demo}
FIG=${FIG:-figures}
TRAIN=${TRAIN_LIMIT:-1500}
TEST=${TEST_LIMIT:-500}
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
GRID=${GRID:-0,5,10,25,50,100,200,450}
SUBSET="--data fashion-mnist --train-limit $TRAIN --test-limit $TEST"
mkdir -p "$OUT" "$FIG/random-init"

probekit layers --model "$MODEL"
probekit extract --model pixels $SUBSET --out "$OUT/pixels.h5" --overwrite
probekit extract --model "$MODEL" --random-init $SUBSET --timesteps 0 --precision fp32 --out "$OUT/random-init.h5" --overwrite
probekit extract --model "$MODEL" $SUBSET --timesteps "$GRID" --precision fp32 --out "$OUT/ddpm.h5" --overwrite
probekit info "$OUT/ddpm.h5"

probekit probe --cache "$OUT/pixels.h5" --probes linear,logreg,knn --out "$FIG/results_pixels.csv"
probekit probe --cache "$OUT/random-init.h5" --probes linear,knn --out "$FIG/results_random-init.csv"
probekit probe --cache "$OUT/ddpm.h5" --probes linear,knn --k 10,20,50 --out "$FIG/results_ddpm.csv"

probekit plot --results "$FIG/results_ddpm.csv" --out "$FIG"
probekit plot --results "$FIG/results_random-init.csv" --out "$FIG/random-init"
probekit tsne --cache "$OUT/ddpm.h5" --results "$FIG/results_ddpm.csv" --out "$FIG/tsne_best_linear.png"
cp "$MODEL/samples.png" "$FIG/samples.png"
probekit summary --results "$FIG/results_pixels.csv" "$FIG/results_random-init.csv" "$FIG/results_ddpm.csv"
echo "== paired comparisons on the $TEST test images (val-chosen cells)"
probekit compare --results "$FIG/results_ddpm.csv" "$FIG/results_pixels.csv" --probe linear
probekit compare --results "$FIG/results_ddpm.csv" "$FIG/results_pixels.csv" --probe linear --probe-b logreg
probekit compare --results "$FIG/results_ddpm.csv" "$FIG/results_random-init.csv" --probe linear

echo "== similarity to the pixels, fusion of cells, and the one-page report"
probekit similarity --cache "$OUT/ddpm.h5" --reference "$OUT/pixels.h5" --out "$OUT/similarity_ddpm_pixels.csv" --figures "$FIG"
probekit fuse --cache "$OUT/ddpm.h5" --results "$FIG/results_ddpm.csv" --out "$FIG/fusion_ddpm.csv" --figures "$FIG"
probekit compare --results "$FIG/fusion_ddpm.csv" "$FIG/results_ddpm.csv" --probe fusion-concat --probe-b linear
probekit compare --results "$FIG/fusion_ddpm.csv" "$FIG/results_ddpm.csv" --probe fusion-mixture --probe-b linear
probekit report --results "$FIG/results_ddpm.csv" "$FIG/results_pixels.csv" "$FIG/results_random-init.csv" \
  "$FIG/fusion_ddpm.csv" "$OUT/similarity_ddpm_pixels.csv" --cache "$OUT/ddpm.h5" "$OUT/pixels.h5" "$OUT/random-init.h5" \
  --images "$FIG/tsne_best_linear.png" "$FIG/samples.png" --x sigma --out "$FIG/report.html"
