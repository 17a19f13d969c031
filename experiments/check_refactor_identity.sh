#!/bin/sh
# Bit-identity check of a refactor: the same extraction, run from a base commit and from this
# tree, must give byte-equal features. Usage (from the repository root):
#   sh experiments/check_refactor_identity.sh [BASE_COMMIT]      (default c32f76d)
# Builds a worktree of BASE_COMMIT under $TMPDIR, extracts the shipped checkpoint on a fixed
# Fashion-MNIST subset with both, once with every layer and once with two early layers (the
# early-stop path), and compares every dataset under /{split}/feats with numpy.array_equal.
set -eu
BASE=${1:-c32f76d}
PY=${PYTHON:-/work/main/.venv/bin/python}
ROOT=$(pwd)
WORK=${TMPDIR:-/tmp}/probekit-identity-$BASE
mkdir -p "$WORK"
[ -d "$WORK/tree" ] || git worktree add --detach "$WORK/tree" "$BASE" >/dev/null
ARGS="--model $ROOT/checkpoints/fashion-mnist-ddpm --data fashion-mnist --train-limit 64 --test-limit 32 --timesteps 0,100 --seed 0 --draws 2 --batch-size 16 --quiet --overwrite"
run() {  # run TREE OUT EXTRA...
    tree=$1; out=$2; shift 2
    (cd "$tree" && PYTHONPATH=$tree nice -n 5 "$PY" -m probekit extract $ARGS --out "$out" "$@" >/dev/null)
}
# The base caches depend only on BASE, so they are built once and kept.
[ -f "$WORK/base_all.h5" ] || run "$WORK/tree" "$WORK/base_all.h5"
[ -f "$WORK/base_early.h5" ] || run "$WORK/tree" "$WORK/base_early.h5" --layers 0,2
run "$ROOT" "$WORK/new_all.h5"
run "$ROOT" "$WORK/new_early.h5" --layers 0,2
"$PY" - "$WORK" <<'PYEOF'
import sys
import h5py
import numpy as np

work = sys.argv[1]
failures = 0
for kind in ("all", "early"):
    with h5py.File(f"{work}/base_{kind}.h5", "r") as a, h5py.File(f"{work}/new_{kind}.h5", "r") as b:
        for split in ("train", "test"):
            names = sorted(a[split]["feats"])
            if names != sorted(b[split]["feats"]):
                print(f"{kind} {split}: layer lists differ"); failures += 1; continue
            for name in names:
                x, y = a[split]["feats"][name][()], b[split]["feats"][name][()]
                same = x.shape == y.shape and np.array_equal(x, y)
                failures += not same
                print(f"{kind:5s} {split:5s} {name:34s} {str(x.shape):18s} {'identical' if same else 'DIFFERENT'}")
            for key in ("labels", "index"):
                failures += not np.array_equal(a[split][key][()], b[split][key][()])
print("RESULT:", "bit-identical" if failures == 0 else f"{failures} datasets differ")
sys.exit(1 if failures else 0)
PYEOF
