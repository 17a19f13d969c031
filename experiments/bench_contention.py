r"""Each step of a reduced main job, idle and with a busy process per core, for several variants.

A variant is a source tree (``PYTHONPATH``) plus environment variables; ``probekit run`` runs a
reduced copy of ``experiments/demo.yaml`` (every step kind, fewer images and grid points) from
empty caches. Variants and the two conditions (idle; one ``while 1: pass`` process per core at
the same priority as the job) alternate for ``--repeats`` rounds in one process, so the machine's
own load changes hit them alike. A step's wall time is the time between its header line
(``== [n/N] name``) and the next one, read from the job's output as it comes.

The result: per variant and step, the median idle time, the median busy time and their ratio
(the issue's goal: at most about 3x), plus the whole job's.

    git archive BASE | tar -x -C /tmp/base   # the tree to compare against (a commit before the change)
    nice -n 5 python experiments/bench_contention.py --variant before=/tmp/base \
        --variant after=. --repeats 2 --out experiments/results/bench_contention.md

``--variant NAME=TREE[,VAR=VALUE...]`` adds environment variables (e.g. ``OMP_WAIT_POLICY=ACTIVE``)
to a variant, for measuring a single knob.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

REDUCED = {
    "model": str(ROOT / "checkpoints" / "fashion-mnist-ddpm"),
    "data": "fashion-mnist",
    "name": "ddpm",
    "train_limit": 200,
    "test_limit": 100,
    "timesteps": [0],
    "precision": "fp32",
    "probes": ["linear", "knn"],
    "k": [10, 20, 50],
    "pixels_probes": ["linear", "logreg", "knn"],
    "random_init_probes": ["linear", "knn"],
    "random_init_timesteps": [0],
    "dense": True,
    "dense_timesteps": [0],
    "dense_layers": "down_blocks.1.resnets.1,mid_block.resnets.1,up_blocks.1",
    "dense_side": 8,
    "mosaics": [6, 4, 6],
    "warp_pairs": [4, 6],
    "label_efficiency": True,
    "labels_per_class": "1,all",
    "budget_draws": 2,
    "label_timesteps": [0],
    "n_boot": 1000,
    "quiet": True,
}


def cpu_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def run_job(tree: str, env_extra: dict[str, str], work: Path, timeout: float) -> tuple[dict[str, float], float]:
    """(seconds per step, whole job) for one ``probekit run`` of the reduced job from empty caches.

    A job still running after ``timeout`` seconds is stopped: its unfinished step and the whole
    job read as the time it had run (a lower bound, marked ">" in the table); later steps are absent.
    """
    out = work / "out"
    subprocess.run(["rm", "-rf", str(out), str(work / "caches")], check=True)
    config = dict(REDUCED, out=str(out), cache_dir=str(work / "caches"))
    config_path = work / "job.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), **env_extra}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "probekit", "run", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=work,
    )
    assert process.stdout is not None
    marks: list[tuple[str, float]] = []
    lines = []
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("== ["):
                marks.append((line.split("] ", 1)[1].split(":")[0].strip(), time.perf_counter()))
    finally:
        timer.cancel()
    end = time.perf_counter()
    code = process.wait()
    if code != 0 and end - started < timeout:
        sys.exit("the job failed:\n" + "".join(lines[-30:]))
    steps = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - at for i, (name, at) in enumerate(marks)}
    return steps, end - started


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME=TREE[,VAR=VALUE...]")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="busy processes (default: one per CPU)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds after which a run is stopped")
    parser.add_argument("--out", type=Path, default=None, help="markdown table (default: print only)")
    args = parser.parse_args()
    variants = []
    for text in args.variant:
        name, rest = text.split("=", 1)
        tree, *assignments = rest.split(",")
        variants.append((name, tree, dict(a.split("=", 1) for a in assignments)))

    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    steps: dict[tuple[str, str], dict[str, list[float]]] = {}
    totals: dict[tuple[str, str], list[float]] = {}
    order: list[str] = []
    runs: list[str] = []  # one line per run, in the order they ran
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(args.repeats):
            for condition in ("idle", "busy"):
                for name, tree, env_extra in variants:
                    busy = busy_processes(args.busy) if condition == "busy" else []
                    try:
                        work = Path(tmp) / name
                        work.mkdir(exist_ok=True)
                        per_step, total = run_job(tree, env_extra, work, args.timeout)
                    finally:
                        for process in busy:
                            process.kill()
                            process.wait()
                    for step, seconds in per_step.items():
                        steps.setdefault((name, condition), {}).setdefault(step, []).append(seconds)
                        if step not in order:
                            order.append(step)
                    totals.setdefault((name, condition), []).append(total)
                    detail = ", ".join(f"{step} {seconds:.1f}" for step, seconds in per_step.items())
                    stopped = " STOPPED at --timeout (lower bounds)" if total >= args.timeout else ""
                    runs.append(f"round {round_number + 1} {condition} {name}: {total:.1f} s{stopped} ({detail})")
                    print(runs[-1], flush=True)

    names = [name for name, _, _ in variants]
    header = "| step | " + " | ".join(f"{n} idle s | {n} busy s | {n} busy/idle" for n in names) + " |"
    lines = [
        f"CPU: {cpu_description()}; torch capability {capability}; idle: no process added by this script (the "
        f"machine's other load stays), busy: {args.busy} busy processes added; medians of {args.repeats} "
        "alternated runs; a run stopped at --timeout leaves its last step a lower bound",
        "",
        header,
        "|" + "---|" * (1 + 3 * len(names)),
    ]

    def row(label: str, idle_values: list[list[float]], busy_values: list[list[float]]) -> str:
        cells = []
        for idle, busy in zip(idle_values, busy_values):
            i, b = statistics.median(idle), statistics.median(busy)
            if math.isnan(b):  # the busy run was stopped before this step
                cells.append(f"{i:.1f} | (not reached) | -")
            else:
                cells.append(f"{i:.1f} | {b:.1f} | {b / i:.2f}x")
        return f"| {label} | " + " | ".join(cells) + " |"

    for step in order:
        lines.append(
            row(
                step,
                [steps[(n, "idle")].get(step, [float("nan")]) for n in names],
                [steps[(n, "busy")].get(step, [float("nan")]) for n in names],
            )
        )
    lines.append(row("**whole job**", [totals[(n, "idle")] for n in names], [totals[(n, "busy")] for n in names]))
    lines += ["", "Each run, in order (seconds per step):", ""] + [f"- {run}" for run in runs]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
