"""Benchmark: the batched ``linear`` probe against the scikit-learn ``logreg`` loop, one run.

Both solve the same problem (standardised features, multinomial logistic regression, L2 C=1,
tol 1e-4). Cells are random ReLU features of a 10-class Gaussian mixture whose overlap varies by
cell, so top-1 spans roughly 40-95 % (mid-accuracy cells included). Setups span feature widths
32 to 1024 and N_train 2k to 60k.

For each setup, ``linear`` fits all of its cells in one batched call; scikit-learn (the
``logreg`` probe's StandardScaler + LogisticRegression, called directly to read its iteration
count) fits the last (hardest) ``sklearn_cells`` of them one by one (all cells on the small
setups, a subset on the big ones, where one scikit-learn fit takes minutes). Reported per setup:
- mean and max |top-1(linear) - top-1(logreg)| in points, over the cells that both fitted;
- speed ratio = (mean scikit-learn seconds per cell) / (linear seconds for the setup / cells),
  both measured in this run; the overall ratio is the same with the scikit-learn time
  extrapolated to every cell (sum of per-cell means x cells) over the total linear time;
- mean iterations of each solver, and ``sklearn_stream_share``: the bytes scikit-learn must read
  (two passes per iteration over the features, which it keeps in float32 as given, a lower
  bound) per second of its fit, as a share of this machine's streaming rate measured in the same
  run (a numpy column sum over the same array). Near 1, its loop would be bound by memory
  traffic; well below 1, by its products' kernels and per-iteration work;
- per-iteration cost: ``sklearn_ms_per_iter`` (its fit time over its iterations) and
  ``two_products_ms``, the two products an iteration of either solver needs (logits W^T X^T and
  gradient R X, K = 10 outputs, float32, torch, best of 3 on one cell): what one iteration costs
  at the least when its only work is reading the features twice;
- ``path_gain``: seconds of two separate ``linear`` solves at C = 0.1 and C = 1 over seconds of
  one regularisation path over both (``fit_linear_path``: features standardised once, C = 1
  warm-started from C = 0.1), the way ``probekit probe --C 0.1,1`` runs.

Both sides run single-threaded (OMP/BLAS threads = 1, torch threads = 1), so that neither gets
more cores than the other and the ratio holds whatever else runs on the machine. Usage (about 10 minutes of CPU on a
2-core AMD EPYC):
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
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from probekit.core.precision import machine_description  # noqa: E402
from probekit.probes.linear import (  # noqa: E402
    LinearProbeConfig,
    fit_linear_path,
    predict_linear_grid,
)
from probekit.probes.logreg import LogRegConfig  # noqa: E402

# (N_train, width, cells, cells fitted by scikit-learn)
SETUPS = [
    (2000, 32, 12, 12),
    (2000, 1024, 4, 4),
    (5000, 128, 48, 6),
    (20000, 256, 6, 2),
    (60000, 1024, 2, 1),
]  # 5000 x 128 x 48 cells: the shape of a probing grid's width group
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
    return f"{machine_description()}; 1-minute load average {os.getloadavg()[0]:.1f} when it ended; 1 thread per side"


def stream_rate(x: np.ndarray) -> float:
    """Bytes per second of a column sum over ``x`` (best of 3): the memory rate."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        x.sum(axis=0)
        best = min(best, time.perf_counter() - start)
    return x.nbytes / best


def sklearn_fit(
    x: np.ndarray, y: np.ndarray, config: LogRegConfig
) -> tuple[float, tuple[StandardScaler, LogisticRegression], int]:
    """What the ``logreg`` probe runs for one cell: (seconds, fitted pipeline pieces, iterations)."""
    start = time.perf_counter()
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=config.C, max_iter=config.max_iter).fit(scaler.transform(x), y)
    return time.perf_counter() - start, (scaler, model), int(model.n_iter_[0])


def two_products_seconds(x: np.ndarray, classes: int = CLASSES) -> float:
    """Best of 3 of the two skinny products of one solver iteration on features ``x`` (N, C)."""
    xt = torch.from_numpy(np.ascontiguousarray(x.T))
    weight_t, residual = torch.randn(classes, x.shape[1]), torch.randn(classes, x.shape[0])
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        weight_t @ xt
        residual @ xt.T
        best = min(best, time.perf_counter() - start)
    return best


def timed_path(train: dict, y_train: np.ndarray, Cs: list[float], config: LinearProbeConfig):
    start = time.perf_counter()
    heads = fit_linear_path(train, y_train, Cs, config)
    return time.perf_counter() - start, heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny setups (smoke test)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_linear.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    total_linear = total_sklearn_all = 0.0
    all_diffs: list[float] = []
    config = LinearProbeConfig()
    for n_train, width, cells, sk_cells in QUICK if args.quick else SETUPS:
        train, y_train, test, y_test = make_cells(n_train, width, cells, seed=n_train + width)
        t_linear, heads = timed_path(train, y_train, [1.0], config)
        predicted = predict_linear_grid(heads[1.0], test)
        t_low, _ = timed_path(train, y_train, [0.1], config)
        t_path, _ = timed_path(train, y_train, [0.1, 1.0], config)
        sub = list(train)[-sk_cells:]  # the hardest cells: mid-accuracy ones included
        t_sklearn, sk_iters, diffs, sk_top1 = 0.0, [], [], []
        for key in sub:
            seconds, (scaler, model), iters = sklearn_fit(train[key], y_train, LogRegConfig())
            sk_dtype = model.coef_.dtype
            t_sklearn += seconds
            sk_iters.append(iters)
            top1 = float(np.mean(model.predict(scaler.transform(test[key])) == y_test))
            sk_top1.append(top1)
            diffs.append(100 * abs(float(np.mean(predicted[key] == y_test)) - top1))
        all_diffs += diffs
        per_cell_sk, per_cell_lin = t_sklearn / sk_cells, t_linear / cells
        total_linear += t_linear
        total_sklearn_all += per_cell_sk * cells
        itemsize = np.dtype(sk_dtype).itemsize  # StandardScaler and lbfgs keep float32 input float32
        bytes_per_s = np.mean(sk_iters) * 2 * n_train * width * itemsize / per_cell_sk
        row = dict(
            n_train=n_train,
            width=width,
            cells=cells,
            sklearn_cells=sk_cells,
            top1_min=round(100 * min(sk_top1), 2),
            top1_max=round(100 * max(sk_top1), 2),
            mean_abs_diff_points=round(float(np.mean(diffs)), 3),
            max_abs_diff_points=round(float(np.max(diffs)), 3),
            linear_s_per_cell=round(per_cell_lin, 3),
            sklearn_s_per_cell=round(per_cell_sk, 3),
            speed_ratio=round(per_cell_sk / per_cell_lin, 1),
            linear_iters=round(float(np.mean([h.n_iter for h in heads[1.0].values()])), 1),
            sklearn_iters=round(float(np.mean(sk_iters)), 1),
            sklearn_ms_per_iter=round(1000 * per_cell_sk / np.mean(sk_iters), 2),
            two_products_ms=round(1000 * two_products_seconds(train[sub[-1]]), 2),
            sklearn_stream_share=round(float(bytes_per_s / stream_rate(train[sub[-1]])), 2),
            path_gain=round((t_linear + t_low) / t_path, 2),
            linear_not_converged=sum(not h.converged for h in heads[1.0].values()),
            sklearn_not_converged=sum(i >= LogRegConfig().max_iter for i in sk_iters),
        )
        rows.append(row)
        print(row, flush=True)
    rows.append(
        dict(
            n_train="all",
            width="all",
            cells=sum(r["cells"] for r in rows),
            sklearn_cells=sum(r["sklearn_cells"] for r in rows),
            mean_abs_diff_points=round(float(np.mean(all_diffs)), 3),
            max_abs_diff_points=round(float(np.max(all_diffs)), 3),
            speed_ratio=round(total_sklearn_all / total_linear, 1),
        )
    )
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
