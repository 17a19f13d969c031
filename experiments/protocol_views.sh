#!/bin/sh
# DDAE's linear-probe protocol from the cache: fresh (view, draw) per epoch vs averaged features.
# The shipped checkpoint on a class-stratified Fashion-MNIST subset (TRAIN train / TEST test
# images), one noise level (t = 5) and the seven layers around the bottleneck (where the main job finds
# its best cells), one cache with 8 augmented views (random crop, 4-pixel padding, + flip) of each
# train image, one noise draw per view. The same cache is probed with the sgd probe (DDAE's
# linear.py recipe: Adam 1e-3, batch 128, cosine over 15 epochs) under
#   --train-features mean                      (one vector per image: the clean image's mean over draws)
#   --train-features sample --use-views A      (a fresh (view, draw) of each image every epoch), A = 1, 4, 8
# and test on one noise draw of the clean image (--test-features single), as linear.py does.
# Every cell is chosen on the validation split (10 % of train) and reported on test.
# Usage: PATH=.venv/bin:$PATH sh experiments/protocol_views.sh   (writes experiments/results/protocol_*.csv)
set -e
OUT=${OUT:-out/protocol}
RES=${RES:-experiments/results}
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
TRAIN=${TRAIN_LIMIT:-2000}
TEST=${TEST_LIMIT:-1000}
mkdir -p "$OUT" "$RES"
if ! probekit info "$OUT/views.h5" 2>/dev/null | grep -q "status: complete"; then
  probekit extract --model "$MODEL" --data fashion-mnist --train-limit "$TRAIN" --test-limit "$TEST" \
    --timesteps 5 --layers 'mid_block*,up_blocks.0*' --views 8 --quiet --out "$OUT/views.h5"
fi
probe() { name=$1; shift; probekit probe --cache "$OUT/views.h5" --probes sgd --test-features single --quiet \
  --out "$RES/protocol_$name.csv" "$@"; }
probe mean --train-features mean
for A in 1 4 8; do probe "sample_views$A" --train-features sample --use-views "$A"; done
for name in mean sample_views1 sample_views4 sample_views8; do
  echo "== $name"; probekit summary --results "$RES/protocol_$name.csv"
done
probekit compare --results "$RES/protocol_sample_views8.csv" "$RES/protocol_mean.csv" --probe sgd
