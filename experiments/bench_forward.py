"""The forward against the same process's matmul, per CPU kind: eager, channels-last, compiled, bf16.

    nice -n 5 python experiments/bench_forward.py [--models unet,dit,sd] [--reps 3]
        [--out experiments/results/bench_forward.csv]

Three networks, each read through the backbone ``probekit extract`` uses:

* ``unet``: the shipped Fashion-MNIST DDPM UNet (``checkpoints/fashion-mnist-ddpm``), batch 16 of 32 x 32;
* ``dit``: DiT-XL/2 at its published size (diffusers' ``DiTTransformer2DModel`` defaults: 28 blocks x
  1152, 32 x 32 x 4 latents, 675 M parameters, random weights), batch 2;
* ``sd``: an SD-1.5-sized UNet (``UNet2DConditionModel`` defaults with SD 1.5's 768-wide text,
  860 M parameters, random weights) on 64 x 64 x 4 latents and a random (77, 768) text state, batch 1.

For each, the FLOPs of one forward (the counter ``probekit extract`` records) and the median
time of ``--reps`` forwards of every variant, alternated round by round in one process:
``eager`` (float32, what extraction runs by default), ``channels_last`` (UNets), ``compile``
(``Backbone.speed_up(compile=True)``, per readable layer as extraction applies it; compile time
reported apart) and ``bf16`` (autocast). Beside them, the same process's float32 and bf16 matmul
rates at 2048^2 and at the shape of the network's largest GEMM (the convolution or linear layer
with the most FLOPs, as an (M x K) @ (K x N) product). Each variant's output is compared with
eager float32 (max |diff| / max |eager|). Rows carry the CPU model and torch's capability.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probekit.core.precision import cpu_description, machine_description  # noqa: E402
from probekit.core.schedule import DDPMSchedule  # noqa: E402
from probekit.core.threads import configure  # noqa: E402
from probekit.features.flops import flop_counter  # noqa: E402
from probekit.models.backbone import Backbone  # noqa: E402


def shipped_unet() -> tuple[Backbone, torch.Tensor]:
    from probekit.models import load_backbone

    backbone = load_backbone(str(ROOT / "checkpoints" / "fashion-mnist-ddpm"))
    return backbone, torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def dit_xl2() -> tuple[Backbone, torch.Tensor]:
    from diffusers import DiTTransformer2DModel

    from probekit.models.dit.backbone import DiTBackbone

    torch.manual_seed(0)
    net = DiTTransformer2DModel()  # the defaults are DiT-XL/2 at 256 px (32 x 32 x 4 latents)
    backbone = DiTBackbone(net, None, DDPMSchedule(), "dit-xl2-random", original_temb=True)
    return backbone, torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def sd15_unet() -> tuple[Backbone, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    from probekit.models.unet import UNetBackbone

    class TextUNet(UNetBackbone):
        """The SD-sized UNet read like an unconditional one: every forward sees one random text state."""

        def _run(self, x, point, labels=None):  # noqa: ANN001, ANN202
            steps = torch.full((x.shape[0],), point.model_input)
            return self.net(x, steps, encoder_hidden_states=context.expand(x.shape[0], -1, -1)).sample

    torch.manual_seed(0)
    context = torch.randn(1, 77, 768)
    net = UNet2DConditionModel(sample_size=64, cross_attention_dim=768).eval()
    return TextUNet(net, DDPMSchedule(), "sd15-sized-random"), torch.randn(1, 4, 64, 64)


MODELS: dict[str, Callable[[], tuple[Backbone, torch.Tensor]]] = {"unet": shipped_unet, "dit": dit_xl2, "sd": sd15_unet}
#: variants whose compile time makes the run too long on a 2-core CPU are left out for the SD-sized UNet
COMPILED = {"unet", "dit"}


def gemm_flops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> tuple[float, tuple[int, int, int]]:
    """FLOPs and (M, K, N) of a convolution or linear layer's call, as one matrix product."""
    x = inputs[0]
    if isinstance(module, nn.Conv2d):
        k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        m = output.shape[0] * output.shape[2] * output.shape[3]
        n = module.out_channels
    else:
        k, n = module.in_features, module.out_features
        m = x.numel() // k
    return 2.0 * m * k * n, (m, k, n)


def largest_gemm(backbone: Backbone, x: torch.Tensor, point) -> tuple[int, int, int]:  # noqa: ANN001
    """(M, K, N) of the layer call with the most FLOPs in one forward."""
    calls: list[tuple[float, tuple[int, int, int]]] = []
    hooks = [
        module.register_forward_hook(lambda mod, inp, out: calls.append(gemm_flops(mod, inp, out)))
        for module in backbone.net.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    try:
        backbone.forward(x, point)
    finally:
        for hook in hooks:
            hook.remove()
    return max(calls)[1]


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 5) -> float:
    """FLOP/s of an (m x k) @ (k x n) product in ``dtype``: median of ``reps`` after a warm-up."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator).to(dtype), torch.randn(k, n, generator=generator).to(dtype)
    # enough repetitions per timing that a small product is timed over at least ~50 ms
    inner = max(1, int(5e9 / (2.0 * m * k * n)))
    times = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        for _ in range(inner):
            a @ b
        times.append((time.perf_counter() - started) / inner)
    return 2.0 * m * k * n / statistics.median(times[1:])


def forward_flops(backbone: Backbone, x: torch.Tensor, point) -> float:  # noqa: ANN001
    with flop_counter() as counter:
        backbone.forward(x, point)
    return float(counter.get_total_flops())


def variants(name: str, backbone: Backbone, x: torch.Tensor) -> dict[str, tuple[Backbone, torch.Tensor, bool]]:
    """The variants to time: name -> (backbone, input, bf16 autocast)."""
    out = {"eager": (backbone, x, False)}
    if x.dim() == 4 and name != "dit":
        channels_last = copy.deepcopy(backbone)
        channels_last.speed_up(channels_last=True)
        out["channels_last"] = (channels_last, x.contiguous(memory_format=torch.channels_last), False)
    if name in COMPILED:
        compiled = copy.deepcopy(backbone)
        compiled.speed_up(compile=True)
        out["compile"] = (compiled, x, False)
    out["bf16"] = (backbone, x, True)
    return out


def run_once(backbone: Backbone, x: torch.Tensor, point, bf16: bool) -> tuple[float, torch.Tensor]:  # noqa: ANN001
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        started = time.perf_counter()
        out = backbone.forward(x, point)
        return time.perf_counter() - started, out.float()


def bench_model(name: str, reps: int, rows: list[dict]) -> None:
    backbone, x = MODELS[name]()
    point = backbone.schedule.point(100)
    machine = machine_description("cpu")
    flops = forward_flops(backbone, x, point)
    m, k, n = largest_gemm(backbone, x, point)
    rates = {
        "matmul fp32 2048^2": matmul_rate(2048, 2048, 2048, torch.float32),
        "matmul bf16 2048^2": matmul_rate(2048, 2048, 2048, torch.bfloat16),
        f"matmul fp32 {m}x{k}x{n} (largest layer)": matmul_rate(m, k, n, torch.float32),
        f"matmul bf16 {m}x{k}x{n} (largest layer)": matmul_rate(m, k, n, torch.bfloat16),
    }
    chosen = variants(name, backbone, x)
    first: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for variant, (net, inp, bf16) in chosen.items():  # first calls: warm-up, compile time, outputs
        first[variant], outputs[variant] = run_once(net, inp, point, bf16)
    times: dict[str, list[float]] = {variant: [] for variant in chosen}
    for r in range(reps):  # alternated, order rotated each round
        order = list(chosen)[r % len(chosen) :] + list(chosen)[: r % len(chosen)]
        for variant in order:
            net, inp, bf16 = chosen[variant]
            times[variant].append(run_once(net, inp, point, bf16)[0])
    fp32_square = rates["matmul fp32 2048^2"]
    reference = outputs["eager"]
    for label, rate in rates.items():
        rows.append(dict(model=name, measure=label, value=round(rate / 1e9, 1), unit="GFLOP/s", machine=machine))
    rows.append(dict(model=name, measure="forward FLOPs per batch", value=round(flops / 1e9, 2), unit="GFLOP",
                     machine=machine, note=f"batch {x.shape[0]}, input {tuple(x.shape[1:])}"))  # fmt: skip
    for variant, measured in times.items():
        seconds = statistics.median(measured)
        change = float((outputs[variant] - reference).abs().max() / reference.abs().max())
        matched = [v for key, v in rates.items() if "largest" in key and ("bf16" in key) == (variant == "bf16")][0]
        rows.append(dict(
            model=name, measure=f"forward {variant}", value=round(seconds, 4), unit="s (median)", machine=machine,
            rate_gflops=round(flops / seconds / 1e9, 1),
            share_of_fp32_2048=round(100 * flops / seconds / fp32_square, 1),
            share_of_matched=round(100 * flops / seconds / matched, 1),
            speedup_vs_eager=round(statistics.median(times["eager"]) / seconds, 3),
            max_rel_output_change=f"{change:.2e}",
            first_call_s=round(first[variant], 2),
        ))  # fmt: skip
    print(f"[{name}] done", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet,dit,sd", help="comma list of unet, dit, sd")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "bench_forward.csv")
    args = parser.parse_args()
    configure()
    torch.set_grad_enabled(False)
    print(machine_description("cpu"), "|", cpu_description(), file=sys.stderr)
    rows: list[dict] = []
    for name in args.models.split(","):
        bench_model(name, args.reps, rows)
    fields = ["model", "measure", "value", "unit", "rate_gflops", "share_of_fp32_2048", "share_of_matched",
              "speedup_vs_eager", "max_rel_output_change", "first_call_s", "note", "machine"]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(" | ".join(str(row.get(key, "")) for key in fields if key != "machine"))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
