#!/bin/sh
# Fine-tuning against the linear probe on the main job's Fashion-MNIST subset (experiments/demo.sh:
# 1500 train / 500 test images, class-stratified, seed 0; the 10 % validation split of train is
# the one `probekit probe` held out). Three classifiers at the main job's val-chosen linear cell
# (t = 0, up_blocks.0.resnets.2, taken from its results table with --from-results), all scored on
# the same 500 test images and compared pairwise:
#   pretrained  the shipped checkpoint cut after the layer + a linear head, trained end to end
#   scratch     the same truncated network randomly initialised, the same recipe (supervised baseline)
#   linear      the linear probe of the shipped checkpoint's frozen features (the main job's table)
# Runs go to out/finetune (not versioned; each resumes from its last finished epoch), tables to
# experiments/results/finetune_*, curves to figures/paper/. On a shared CPU run it as
#   nice -n 10 sh experiments/finetune.sh
set -e
OUT=${OUT:-out/finetune}
RES=${RES:-experiments/results}
FIG=${FIG:-figures/paper}
MODEL=${MODEL:-checkpoints/fashion-mnist-ddpm}
LINEAR=${LINEAR:-figures/results_ddpm.csv}  # experiments/demo.sh's linear + kNN table and its predictions sidecar
EPOCHS=${EPOCHS:-15}
[ -f "$LINEAR" ] || sh experiments/demo.sh
mkdir -p "$OUT" "$RES" "$FIG"

python -c "import torch; from probekit.core.precision import cpu_description; print(cpu_description(), '| torch', torch.__version__, torch.get_num_threads(), 'threads')" \
    | tee "$RES/finetune_machine.txt"
# Load average once a minute while the runs train (the CPU may be shared with other jobs); not
# when both runs are finished and are only re-scored.
if [ ! -f "$OUT/pretrained/results.csv" ] || [ ! -f "$OUT/scratch/results.csv" ]; then
    (while :; do echo "$(date -u +%FT%TZ) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 60; done) >> "$OUT/load.log" &
    SAMPLER=$!
    trap 'kill $SAMPLER' EXIT
fi

FT="--data fashion-mnist --train-limit 1500 --test-limit 500 --seed 0 --from-results $LINEAR \
    --epochs $EPOCHS --batch-size 64 --precision fp32 --quiet"
probekit finetune --model "$MODEL" $FT --out "$OUT/pretrained"
probekit finetune --model "$MODEL" --random-init $FT --out "$OUT/scratch"

for run in pretrained scratch; do
    cp "$OUT/$run/results.csv" "$RES/finetune_$run.csv"
    cp "$OUT/$run/results.predictions.npz" "$RES/finetune_$run.predictions.npz"
    cp "$OUT/$run/curves.csv" "$RES/finetune_${run}_curves.csv"
    cp "$OUT/$run/record.json" "$RES/finetune_${run}_record.json"
done
cp "$OUT/load.log" "$RES/finetune_load.log"
cp "$OUT/pretrained/curves.png" "$FIG/finetune_curves.png"
cp "$OUT/scratch/curves.png" "$FIG/finetune_scratch_curves.png"

probekit summary --results "$RES/finetune_pretrained.csv" "$RES/finetune_scratch.csv" "$LINEAR" | tee "$RES/finetune_summary.txt"
{
    echo "== fine-tuned minus linear probe"
    probekit compare --results "$RES/finetune_pretrained.csv" "$LINEAR" --probe finetune --probe-b linear
    echo "== fine-tuned minus from scratch"
    probekit compare --results "$RES/finetune_pretrained.csv" "$RES/finetune_scratch.csv" --probe finetune
    echo "== linear probe minus from scratch"
    probekit compare --results "$LINEAR" "$RES/finetune_scratch.csv" --probe linear --probe-b finetune
} | tee "$RES/finetune_compare.txt"
