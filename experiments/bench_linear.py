"""Benchmark: the batched ``linear`` probe against the scikit-learn ``logreg`` loop, one run.

Both solve the same problem (standardised features, multinomial logistic regression, L2 C=1,
tol 1e-4). Cells are random ReLU features of a 10-class Gaussian mixture whose overlap varies by
cell, so top-1 spans roughly 40-95 % (mid-accuracy cells included). Setups span feature widths
32 to 1024 and N_train 2k to 60k.

For each setup, ``linear`` fits all of its cells in one batched call; ``logreg`` fits the last
(hardest) ``sklearn_cells`` of them one by one (all cells on the small setups, a subset on the
big ones, where one scikit-learn fit takes minutes). Reported per setup:
- mean and max |top-1(linear) - top-1(logreg)| in points, over the cells that both fitted;
- speed ratio = (mean scikit-learn seconds per cell) / (linear seconds for the setup / cells),
  both measured in this run; the overall ratio is the same with the scikit-learn time
  extrapolated to every cell (sum of per-cell means x cells) over the total linear time.

Both sides run single-threaded (OMP/BLAS threads = 1, torch threads = 1), so that neither gets
more cores than the other and the ratio holds whatever else runs on the machine. Usage (about 10 minutes of CPU on a 2-core AMD EPYC):
    nice -n 5 python experiments/bench_linear.py
    python experiments/bench_linear.py --quick        # smoke test, seconds
Writes experiments/results/bench_linear.csv and prints the table.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probekit.probes.linear import LinearProbeConfig, linear_probe_grid  # noqa: E402
from probekit.probes.logreg import LogRegConfig, logreg_probe  # noqa: E402

# (N_train, width, cells, cells fitted by scikit-learn)
SETUPS = [(2000, 32, 12, 12), (2000, 1024, 4, 4), (5000, 128, 48, 6), (20000, 256, 6, 2),
          (60000, 1024, 2, 1)]  # 5000 x 128 x 48 cells: the shape of a probing grid's width group
QUICK = [(2000, 32, 4, 4), (4000, 128, 2, 1)]
N_TEST = 5000
CLASSES = 10


def make_cells(n_train: int, width: int, cells: int, seed: int):
    """Random ReLU features of a noisy 10-class mixture; class overlap grows with the cell index."""
    rng = np.random.default_rng(seed)
    n = n_train + N_TEST
    y = rng.integers(0, CLASSES, n)
    centres = rng.standard_normal((CLASSES, 16))
    train, test = {}, {}
    for c in range(cells):
        noise = 0.6 + 1.4 * c / max(1, cells - 1)  # from easy (~95 %) to hard (~40 %)
        latent = (centres[y] + noise * rng.standard_normal((n, 16))).astype(np.float32)
        proj = rng.standard_normal((16, width)).astype(np.float32) / 4
        x = np.maximum(latent @ proj + 0.5 * rng.standard_normal((n, width), dtype=np.float32), 0)
        train[c], test[c] = x[:n_train], x[n_train:]
    return train, y[:n_train].astype(np.int64), test, y[n_train:].astype(np.int64)


def machine() -> str:
    model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                           text=True).stdout.split(":")[-1].strip()  # fmt: skip
    return f"{model}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; " \
           f"{os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.1f} when it ended; 1 thread per side"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny setups (smoke test)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_linear.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    total_linear = total_sklearn_all = 0.0
    all_diffs: list[float] = []
    for n_train, width, cells, sk_cells in QUICK if args.quick else SETUPS:
        train, y_train, test, y_test = make_cells(n_train, width, cells, seed=n_train + width)
        start = time.perf_counter()
        ours = linear_probe_grid(train, y_train, test, y_test, LinearProbeConfig())
        t_linear = time.perf_counter() - start
        sub = list(train)[-sk_cells:]  # the hardest cells: mid-accuracy ones included
        start = time.perf_counter()
        ref = logreg_probe({k: train[k] for k in sub}, y_train, {k: test[k] for k in sub}, y_test,
                           LogRegConfig())  # fmt: skip
        t_sklearn = time.perf_counter() - start
        diffs = [100 * abs(ours[k].top1 - ref[k].top1) for k in sub]
        all_diffs += diffs
        per_cell_sk, per_cell_lin = t_sklearn / sk_cells, t_linear / cells
        total_linear += t_linear
        total_sklearn_all += per_cell_sk * cells
        row = dict(
            n_train=n_train, width=width, cells=cells, sklearn_cells=sk_cells,
            top1_min=round(100 * min(ref[k].top1 for k in sub), 2),
            top1_max=round(100 * max(ref[k].top1 for k in sub), 2),
            mean_abs_diff_points=round(float(np.mean(diffs)), 3),
            max_abs_diff_points=round(float(np.max(diffs)), 3),
            linear_s_per_cell=round(per_cell_lin, 3), sklearn_s_per_cell=round(per_cell_sk, 3),
            speed_ratio=round(per_cell_sk / per_cell_lin, 1),
            linear_not_converged=sum(not ours[k].converged for k in train),
            sklearn_not_converged=sum(not ref[k].converged for k in sub),
        )
        rows.append(row)
        print(row, flush=True)
    rows.append(dict(
        n_train="all", width="all", cells=sum(r["cells"] for r in rows),
        sklearn_cells=sum(r["sklearn_cells"] for r in rows),
        mean_abs_diff_points=round(float(np.mean(all_diffs)), 3),
        max_abs_diff_points=round(float(np.max(all_diffs)), 3),
        speed_ratio=round(total_sklearn_all / total_linear, 1),
    ))
    info = machine()
    for r in rows:
        r["machine"] = info
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    fields = list(rows[0]) if "machine" in rows[0] else list(rows[0])
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    print(rows[-1])
    print(f"wrote {out} ({info})")


if __name__ == "__main__":
    main()
