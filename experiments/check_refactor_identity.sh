#!/bin/sh
# Bit-identity check of a refactor: the same work, run from a base commit and from this tree, must
# give byte-equal features, results tables and predictions. Usage (from the repository root):
#   sh experiments/check_refactor_identity.sh BASE_COMMIT
# The interpreter is `python` on PATH (or $PYTHON); it must have probekit's dependencies.
# Builds a worktree of BASE_COMMIT under $TMPDIR and, with both trees, on a fixed Fashion-MNIST
# subset of the shipped checkpoint:
#   - extracts every layer and two early layers (the early-stop path) and compares /{split}/feats,
#     labels and index with numpy.array_equal;
#   - probes the full cache (linear + knn) and compares the results CSVs byte for byte and the
#     predictions sidecars array by array;
#   - extracts over two torchrun shards (the merged master file) and compares it with the same;
#   - this tree only: an extraction interrupted by SIGTERM and resumed equals the uninterrupted one;
#   - `probekit run`'s step plans for four settings and experiments/demo.yaml read as settings;
#   - on the main job's subset (experiments/demo.yaml: 1500 train + 500 test images, seed 0, fp32,
#     every layer; MAIN_TIMESTEPS of its grid, default 0,100): the cache, and the linear + knn
#     results table and predictions sidecar of probing it with the main job's k values.
set -eu
BASE=${1:?usage: sh experiments/check_refactor_identity.sh BASE_COMMIT}
PY=${PYTHON:-$(command -v python || command -v python3)}
ROOT=$(pwd)
WORK=${TMPDIR:-/tmp}/probekit-identity-$(git rev-parse --short "$BASE")
mkdir -p "$WORK"
[ -d "$WORK/tree" ] || git worktree add --detach "$WORK/tree" "$BASE" >/dev/null
ARGS="--model $ROOT/checkpoints/fashion-mnist-ddpm --data fashion-mnist --train-limit 64 --test-limit 32 --timesteps 0,100 --seed 0 --draws 2 --batch-size 16 --quiet --overwrite"
run() {  # run TREE COMMAND ARGS...
    tree=$1; shift
    (cd "$tree" && PYTHONPATH=$tree nice -n 5 "$PY" -m probekit "$@" >/dev/null)
}
sharded() {  # sharded TREE OUT
    (cd "$1" && PYTHONPATH=$1 nice -n 5 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m probekit extract $ARGS --layers 0,2 --out "$2" >/dev/null 2>&1)
}
both() {  # both NAME ARGS...: the base's output is built once and kept
    name=$1; shift
    [ -f "$WORK/base_$name" ] || run "$WORK/tree" "$@" "$WORK/base_$name"
    run "$ROOT" "$@" "$WORK/new_$name"
}
both all.h5 extract $ARGS --out
both early.h5 extract $ARGS --layers 0,2 --out
both results.csv probe --cache "$WORK/base_all.h5" --probes linear,knn --k 5 --quiet --out
MAIN="--model $ROOT/checkpoints/fashion-mnist-ddpm --data fashion-mnist --train-limit 1500 --test-limit 500 --seed 0 --precision fp32 --timesteps ${MAIN_TIMESTEPS:-0,100} --quiet --overwrite"
both main.h5 extract $MAIN --out
both main_results.csv probe --cache "$WORK/base_main.h5" --probes linear,knn --k 10,20,50 --quiet --out
[ -f "$WORK/base_sharded.h5" ] || sharded "$WORK/tree" "$WORK/base_sharded.h5"
sharded "$ROOT" "$WORK/new_sharded.h5"
# Resume: stop an extraction mid-way with SIGTERM, run it again, compare with the full run.
rm -f "$WORK/resumed.h5"
(cd "$ROOT" && PYTHONPATH=$ROOT "$PY" -m probekit extract $ARGS --batch-size 8 --out "$WORK/resumed.h5" >/dev/null 2>&1) &
pid=$!
while [ ! -f "$WORK/resumed.h5" ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
sleep 1; kill -TERM $pid 2>/dev/null || true; wait $pid || true
(cd "$ROOT" && PYTHONPATH=$ROOT "$PY" -m probekit extract $(echo "$ARGS" | sed 's/--overwrite//') --batch-size 8 --out "$WORK/resumed.h5" >/dev/null)
# `probekit run`'s plans (every step's name, commands, outputs and folders, for settings with dense
# probes and label efficiency on and off) and the main job's YAML read as settings, from both trees.
plans() {  # plans TREE OUT
    (cd "$1" && PYTHONPATH=$1 "$PY" - "$ROOT/experiments/demo.yaml" >"$2" <<'PLANEOF'
import dataclasses
import json
import sys
from pathlib import Path

from probekit.pipeline import STEPS, RunConfig, RunPaths

settings = [
    {},
    dict(dense=True, label_efficiency=True, dense_timesteps=[0, 50], dense_layers="a,b", timesteps=[0, 5],
         layers="0,-1", label_timesteps=[0], images=["x.png"], no_download=True, train_limit=10, test_limit=5,
         C=[0.1, 1.0], k=[5, 10]),
    dict(dense=True, pixels=False),
    dict(dense=True, random_init=False, fusion=False, tsne=False, similarity=False),
]
paths = RunPaths(out=Path("o"), caches=Path("c"), label="m")
out = []
for extra in settings:
    config = RunConfig(model="M", data="fashion-mnist", out="o", name="m", cache_dir="c", **extra)
    out.append([
        [s.name, s.resumable, None if (p := s.plan(config, paths)) is None
         else [p.commands, [str(o) for o in p.outputs], str(p.capture), [str(f) for f in p.fresh]]]
        for s in STEPS
    ])
out.append(dataclasses.asdict(RunConfig.from_sources(sys.argv[1], {})))
print(json.dumps(out, sort_keys=True))
PLANEOF
    )
}
plans "$WORK/tree" "$WORK/base_plans.json"
plans "$ROOT" "$WORK/new_plans.json"
"$PY" - "$WORK" <<'PYEOF'
import sys
import h5py
import numpy as np

work = sys.argv[1]
failures = 0


def same_cache(a_path: str, b_path: str, label: str) -> None:
    global failures
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        for split in ("train", "test"):
            names = sorted(a[split]["feats"])
            if names != sorted(b[split]["feats"]):
                print(f"{label} {split}: layer lists differ"); failures += 1; continue
            for name in names:
                x, y = a[split]["feats"][name][()], b[split]["feats"][name][()]
                same = x.shape == y.shape and np.array_equal(x, y)
                failures += not same
                print(f"{label:8s} {split:5s} {name:34s} {str(x.shape):18s} {'identical' if same else 'DIFFERENT'}")
            for key in ("labels", "index"):
                failures += not np.array_equal(a[split][key][()], b[split][key][()])


same_cache(f"{work}/base_all.h5", f"{work}/new_all.h5", "all")
same_cache(f"{work}/base_early.h5", f"{work}/new_early.h5", "early")
same_cache(f"{work}/base_sharded.h5", f"{work}/new_sharded.h5", "sharded")
same_cache(f"{work}/new_all.h5", f"{work}/resumed.h5", "resumed")
same_cache(f"{work}/base_main.h5", f"{work}/new_main.h5", "main")
for name in ("results", "main_results"):
    with open(f"{work}/base_{name}.csv", "rb") as a, open(f"{work}/new_{name}.csv", "rb") as b:
        same = a.read() == b.read()
    failures += not same
    print(f"{name}.csv {'identical' if same else 'DIFFERENT'}")
    with np.load(f"{work}/base_{name}.predictions.npz") as a, np.load(f"{work}/new_{name}.predictions.npz") as b:
        same = sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    failures += not same
    print(f"{name}.predictions.npz {'identical' if same else 'DIFFERENT'}")
with open(f"{work}/base_plans.json", "rb") as a, open(f"{work}/new_plans.json", "rb") as b:
    same = a.read() == b.read()
failures += not same
print(f"run plans and demo.yaml settings {'identical' if same else 'DIFFERENT'}")
print("RESULT:", "bit-identical" if failures == 0 else f"{failures} datasets differ")
sys.exit(1 if failures else 0)
PYEOF
