"""Cost of reading every activation kind: hooks on all kinds and block outputs of an SD-1.5-sized UNet.

    nice -n 5 python experiments/bench_kinds_overhead.py [--device cpu|cuda] [--batch 2] [--reps 3]

A ``UNet2DConditionModel`` with diffusers' default config except SD 1.5's text width (cross
attention 768, 64 x 64 latents; 860 M parameters, random weights), conditioned on a random
(77, 768) text state. Alternates, in one process, the bare forward (no hooks) and one
``features`` call that captures every block output and every activation kind with gap pooling
(one forward, hooks on every sub-module a kind reads, early stop after the deepest), and reports
the median of each and their ratio. Prints the machine, CPU and torch's CPU capability.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from probekit.core.pooling import Pooling
from probekit.core.schedule import DDPMSchedule
from probekit.core.types import GridPoint
from probekit.models.unet import UNetBackbone


class TextUNet(UNetBackbone):
    """A text-conditioned UNet read like an unconditional one: every forward sees the same text state."""

    def __init__(self, net: torch.nn.Module, context: torch.Tensor) -> None:
        self.context = context
        super().__init__(net, DDPMSchedule.from_config({}), "sd15-sized-random")

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device)
        return self.net(x, timesteps, encoder_hidden_states=self.context.expand(x.shape[0], -1, -1)).sample


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = UNet2DConditionModel(sample_size=64, cross_attention_dim=768).eval().to(device)
    backbone = TextUNet(net, torch.randn(1, 77, 768, device=device))
    started = time.perf_counter()
    kinds = backbone.kind_layers()
    found_s = time.perf_counter() - started
    names = [layer.name for layer in backbone.layers()] + [layer.name for layer in kinds]
    x = torch.randn(args.batch, 4, 64, 64, device=device)
    point = backbone.schedule.point(500)
    pooling = Pooling(1)
    runs = {
        "bare forward": lambda: backbone.forward(x, point),
        "every kind + block output": lambda: backbone.features(x, point, names, pooling),
    }
    # wall time, and the process's CPU time (less sensitive to other work sharing the CPU)
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.reps + 1):  # the first round warms up
        for name, run in runs.items():
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                run()
            _sync(device)
            if rep:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    bare = statistics.median(times["bare forward"])
    hooked = statistics.median(times["every kind + block output"])
    counts: dict[str, int] = {}
    for layer in kinds:
        kind = layer.name.rsplit(":", 1)[1]
        counts[kind] = counts.get(kind, 0) + 1
    params = sum(p.numel() for p in net.parameters())
    print(f"machine: {platform.platform()}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; CPU capability {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"UNet2DConditionModel default config, cross attention 768, 64x64 latents: {params / 1e6:.0f} M parameters")
    print(f"{len(kinds)} kinds ({', '.join(f'{k} {n}' for k, n in counts.items())}) + {len(backbone.layers())} "
          f"block outputs; kinds found in {found_s:.1f} s (one blank forward, once per model)")  # fmt: skip
    print(f"batch {args.batch}, {args.reps} alternated repetitions, medians:")
    for name, values in times.items():
        print(
            f"  {name:<28} wall {statistics.median(values):8.3f} s ({', '.join(f'{v:.3f}' for v in values)}); "
            f"process CPU {statistics.median(cpu[name]):8.3f} s ({', '.join(f'{v:.3f}' for v in cpu[name])})"
        )
    bare_cpu = statistics.median(cpu["bare forward"])
    hooked_cpu = statistics.median(cpu["every kind + block output"])
    print(
        f"overhead of hooking every kind: wall {100 * (hooked - bare) / bare:+.1f} %, "
        f"process CPU {100 * (hooked_cpu - bare_cpu) / bare_cpu:+.1f} % of the bare forward"
    )


if __name__ == "__main__":
    main()
