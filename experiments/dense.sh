#!/bin/sh
# Dense probing and label efficiency of the shipped Fashion-MNIST DDPM (checkpoints/fashion-mnist-ddpm)
# beside the same UNet randomly initialised and raw pixels, on small subsets of real Fashion-MNIST.
# Caches go to out/dense (not versioned); tables and figures to figures/dense/.
#
# 1. Segmentation: 2 x 2 mosaics of Fashion-MNIST garments (16 x 16 tiles -> 32 x 32 images, the
#    model's input size); a per-pixel linear probe on every (t, layer) cell's 8 x 8 feature map,
#    read bilinearly at each pixel; mIoU over background + 10 garments, cell chosen on val mosaics.
# 2. Correspondence: random affine warps of Fashion-MNIST test images (exact ground truth),
#    PCK@0.1 of the target foreground box, cell chosen on val pairs (warps of train images).
#    Raw pixels are not a correspondence baseline here: one gray channel makes the cosine
#    similarity of two pixels +-1, so every foreground pixel ties.
# 3. Label efficiency: linear probes on 1, 5, 10, 50 labelled images per class (3 seeded draws each)
#    and on all of them, val and test fixed; val-chosen cell's test accuracy per budget.
#
# Budget at the default sizes: (MOSAICS + 2 * PAIRS) x |DENSE_GRID| + the random-init twin at t = 0
# on the same images + (TRAIN + TEST) x (|LE_GRID| + 1) forwards = 4 540 forwards of the 1.15 GFLOP
# UNet, about 2 minutes on a 2-core CPU that runs it at 41 GFLOP/s, plus about a minute of probing.
# Measured: 6 min of CPU time (15 min 44 s wall on a shared 2-core AMD EPYC at load 13-15), with
# OMP_NUM_THREADS=1, which small probes need on a loaded machine (figures/dense/run.txt).
set -e
OUT=${OUT:-out/dense}
FIG=${FIG:-figures/dense}
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
DENSE_GRID=${DENSE_GRID:-0,50,200}
LAYERS=${LAYERS:-down_blocks.0.resnets.1,down_blocks.1.resnets.1,down_blocks.2.resnets.1,mid_block.resnets.1,up_blocks.0.resnets.2,up_blocks.0,up_blocks.1.resnets.2,up_blocks.1,up_blocks.2.resnets.2}
SIDE=${SIDE:-8}
MOSAIC_TRAIN=${MOSAIC_TRAIN:-120}
MOSAIC_VAL=${MOSAIC_VAL:-40}
MOSAIC_TEST=${MOSAIC_TEST:-80}
PAIRS_VAL=${PAIRS_VAL:-30}
PAIRS_TEST=${PAIRS_TEST:-80}
TRAIN=${TRAIN_LIMIT:-600}
TEST=${TEST_LIMIT:-300}
LE_GRID=${LE_GRID:-0,100}
BUDGETS=${BUDGETS:-1,5,10,50,all}
X="--precision fp32 --overwrite --quiet"
rm -rf "$OUT/mosaic" "$OUT/pairs"
mkdir -p "$OUT" "$FIG/segment" "$FIG/correspond" "$FIG/labels"

echo "== segmentation on Fashion-MNIST mosaics"
probekit mosaic --out "$OUT/mosaic" --train "$MOSAIC_TRAIN" --val "$MOSAIC_VAL" --test "$MOSAIC_TEST"
probekit extract --model "$MODEL" --data "$OUT/mosaic" --timesteps "$DENSE_GRID" --layers "$LAYERS" --pooling spatial$SIDE $X --out "$OUT/mosaic_ddpm.h5"
probekit extract --model "$MODEL" --random-init --data "$OUT/mosaic" --timesteps 0 --layers "$LAYERS" --pooling spatial$SIDE $X --out "$OUT/mosaic_random-init.h5"
probekit extract --model pixels --data "$OUT/mosaic" --pooling spatial32 $X --out "$OUT/mosaic_pixels.h5"
for run in ddpm random-init pixels; do
  probekit segment --cache "$OUT/mosaic_$run.h5" --data "$OUT/mosaic" --out "$FIG/segment_$run.csv"
done
probekit plot --results "$FIG/segment_ddpm.csv" --metric miou --out "$FIG/segment"
probekit dense-compare --results "$FIG/segment_ddpm.csv" "$FIG/segment_pixels.csv"
probekit dense-compare --results "$FIG/segment_ddpm.csv" "$FIG/segment_random-init.csv"

echo "== correspondence on warped Fashion-MNIST pairs"
probekit pairs --warp fashion-mnist --out "$OUT/pairs" --val "$PAIRS_VAL" --test "$PAIRS_TEST"
probekit extract --model "$MODEL" --data "$OUT/pairs" --timesteps "$DENSE_GRID" --layers "$LAYERS" --pooling spatial$SIDE $X --out "$OUT/pairs_ddpm.h5"
probekit extract --model "$MODEL" --random-init --data "$OUT/pairs" --timesteps 0 --layers "$LAYERS" --pooling spatial$SIDE $X --out "$OUT/pairs_random-init.h5"
for run in ddpm random-init; do
  probekit correspond --cache "$OUT/pairs_$run.h5" --data "$OUT/pairs" --out "$FIG/correspond_$run.csv"
done
probekit plot --results "$FIG/correspond_ddpm.csv" --metric pck --out "$FIG/correspond"
probekit dense-compare --results "$FIG/correspond_ddpm.csv" "$FIG/correspond_random-init.csv"

echo "== label efficiency"
SUBSET="--data fashion-mnist --train-limit $TRAIN --test-limit $TEST"
probekit extract --model "$MODEL" $SUBSET --timesteps "$LE_GRID" $X --out "$OUT/le_ddpm.h5"
probekit extract --model "$MODEL" --random-init $SUBSET --timesteps 0 $X --out "$OUT/le_random-init.h5"
probekit extract --model pixels $SUBSET $X --out "$OUT/le_pixels.h5"
for run in ddpm random-init pixels; do
  probekit probe --cache "$OUT/le_$run.h5" --probes linear --labels-per-class "$BUDGETS" --quiet --out "$FIG/labels_$run.csv"
done
probekit plot --results "$FIG/labels_ddpm.csv" "$FIG/labels_random-init.csv" "$FIG/labels_pixels.csv" --out "$FIG/labels"
