#!/bin/sh
# The rest of DDAE's evaluation on the shipped Fashion-MNIST DDPM, sized for a 2-core CPU:
# the over-training sweep (extract + linear probe + alignment/uniformity per checkpoint), the
# alignment/uniformity heatmaps of the last checkpoint and the noise-conditional classifier against
# noisy pixels (fine-tuning is experiments/finetune.sh). Runs go to out/paper (not versioned);
# figures and tables to figures/paper/.
# Every step resumes or reuses what an earlier run left in out/paper.
set -e
OUT=${OUT:-out/paper}
FIG=${FIG:-figures/paper}
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
SUBSET="--data fashion-mnist --train-limit ${TRAIN_LIMIT:-300} --test-limit ${TEST_LIMIT:-150}"
mkdir -p "$OUT" "$FIG"

# 1. Over training: checkpoints at 1000, 2000 and 3000 steps; layers 0..15 (down path, mid block,
#    up_blocks.0: the forward stops there), t = 0 and 25, two noise draws (alignment needs two).
probekit sweep --run "$MODEL" $SUBSET --timesteps 0,25 --layers 0:16 --draws 2 --out "$OUT/sweep" --quiet
LAST="$OUT/sweep/step-0003000"

# 2. Alignment and uniformity of every cell of the last checkpoint.
probekit align --cache "$LAST/features.h5" --out "$FIG/align.csv" --figures "$FIG"

# 3. Noise-conditional classifier on the val-chosen layer of the main job, against noisy pixels.
probekit noisy-classifier --model "$MODEL" --data fashion-mnist --train-limit 2000 --test-limit 1000 \
    --layer up_blocks.0.resnets.2 --draws 1 --out "$OUT/ncc" --quiet

# 4. Fine-tuning (the shipped weights and the same network from scratch, against the linear probe)
#    is experiments/finetune.sh: on the main job's 1500 / 500 images, not on this smaller subset.

cp "$OUT/sweep/sweep.png" "$OUT/sweep/sweep.csv" "$FIG/"
cp "$OUT/ncc/accuracy_vs_sigma.png" "$FIG/ncc_accuracy_vs_sigma.png"
cp "$OUT/ncc/results.csv" "$FIG/ncc_results.csv"
