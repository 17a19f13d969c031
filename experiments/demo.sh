#!/bin/sh
# The main job: `probekit run` on the shipped checkpoint with the settings of experiments/demo.yaml
# (read it for the budget and protocol). Extra flags override the file, e.g.
#   sh experiments/demo.sh --train-limit 300 --test-limit 100 --out /tmp/small --cache-dir /tmp/small/caches
# Re-running skips the finished steps; an interrupted run continues where it stopped.
set -e
probekit layers --model checkpoints/fashion-mnist-ddpm
exec probekit run --config experiments/demo.yaml "$@"
