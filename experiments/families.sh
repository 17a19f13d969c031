#!/bin/sh
# The families job (experiments/families.yaml: read it for the models, grids and budget), timed,
# with the machine it ran on; then the figures and paired comparisons of docs/results/families.md.
#   nice -n 5 sh experiments/families.sh > out/families.log 2>&1
# Re-running skips the finished steps; an interrupted run continues where it stopped.
set -e
PYTHON=${PYTHON:-python}
$PYTHON -c "import platform, torch; print('machine:', platform.processor() or platform.machine(), \
'| torch', torch.__version__, '| CPU capability', torch.backends.cpu.get_cpu_capability(), \
'| threads', torch.get_num_threads())"
grep -m1 "model name" /proc/cpuinfo || true
start=$(date +%s)
$PYTHON -m probekit run --config experiments/families.yaml "$@"
echo "families job: $(( $(date +%s) - start )) s wall"
$PYTHON experiments/families_figures.py --run out/families --out docs/figures/families
