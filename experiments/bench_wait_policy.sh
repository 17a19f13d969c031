#!/bin/bash
# The label-efficiency probe of the main job's DDPM cache under OpenMP/BLAS environment variants,
# first with the machine as it is, then with one `while 1: pass` process per core beside it.
# Run from a tree whose `probekit` does not set the wait policy itself (a commit before
# probekit/core/threads.py) to see the knobs alone:
#   git archive BASE probekit | tar -x -C /tmp/base
#   nice -n 5 experiments/bench_wait_policy.sh /tmp/base out/demo/ddpm.h5
set -euo pipefail
TREE=${1:?the source tree to run (PYTHONPATH)}
CACHE=${2:?the DDPM cache of the main job (out/demo/ddpm.h5)}
PY=${PYTHON:-python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() {
    local label=$1
    shift
    local start end
    start=$(date +%s.%N)
    env PYTHONPATH="$TREE" "$@" "$PY" -m probekit probe --cache "$CACHE" --probes linear \
        --labels-per-class 1,10,all --budget-draws 3 --timesteps 0 --out "$OUT/labels.csv" --quiet >"$OUT/log" 2>&1 ||
        { tail -3 "$OUT/log"; exit 1; }
    end=$(date +%s.%N)
    printf '%s %.1f s\n' "$label" "$(echo "$end - $start" | bc)"
}
for condition in shared busy; do
    pids=()
    if [ "$condition" = busy ]; then
        for _ in $(seq "$(nproc)"); do "$PY" -c "while 1: pass" & pids+=($!); done
    fi
    run "$condition default" PROBEKIT_BENCH=1
    run "$condition passive" OMP_WAIT_POLICY=PASSIVE
    run "$condition threads1" OMP_NUM_THREADS=1
    run "$condition passive+blas1" OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1
    for pid in "${pids[@]}"; do kill "$pid"; done
done
