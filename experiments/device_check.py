"""One run on a GPU: every CUDA path against its CPU result, then throughput at published sizes.

Part 1, agreement (tiny sizes, seconds): the same CLI commands run with ``--device DEVICE`` and
``--device cpu`` on sklearn's bundled digits (no download) and a tiny random UNet, and their
outputs are compared with the tolerances of the CPU tests: extraction in fp32 (features within
1e-4 of their scale) and bf16 (within 0.1 of their scale), the ``linear``, ``knn``, ``sgd`` and
``mlp`` probes (test accuracy of every cell within 2, 1, 5 and 5 points), fine-tuning (final test
accuracy within 10 points) and pretraining (last logged loss within 10 %).

Part 2, performance (random weights, published sizes): images/s, peak GPU memory and achieved
FLOP/s of the bare forward for DDAE's 35.7 M CIFAR-10 UNet (batch 256, fp32 and bf16), an SD
1.5-sized UNet at 512 px (64 x 64 latents), DiT-XL/2 at 256 px and DINOv2-L/14 at 224 px; the
batched ``linear`` probe against scikit-learn's loop at 60 k x 1024, and ``knn`` at 1.28 M x 50 k.
FLOPs per forward are counted on fake tensors (torch.utils.flop_counter), time with the device
synchronised.

Everything goes to one CSV (section, check, device, precision, metric, value, reference,
tolerance, passed, seconds, note). ``--tiny`` runs part 2 at tiny sizes (the test suite runs the
whole script that way on the CPU, so it cannot rot).

    python experiments/device_check.py --device cuda --out experiments/results/device_check.csv
    python experiments/device_check.py --device cpu --tiny --out /tmp/check.csv   # what the tests run
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

FIELDS = [
    "section",
    "check",
    "device",
    "precision",
    "metric",
    "value",
    "reference",
    "tolerance",
    "passed",
    "seconds",
    "note",
]


@dataclass
class Row:
    section: str
    check: str
    device: str
    precision: str
    metric: str
    value: float
    reference: float | None = None
    tolerance: float | None = None
    passed: bool | None = None
    seconds: float | None = None
    note: str = ""


def write_rows(rows: list[Row], out: Path) -> None:
    """The one CSV of the check, written whole at the end (a crash leaves no partial file)."""
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: ("" if value is None else value) for key, value in asdict(row).items()})
    tmp.replace(out)


# ----------------------------------------------------------------------------- models


def tiny_unet(folder: Path) -> Path:
    """A tiny random DDPM UNet2DModel (1 channel, 16 px) saved as a diffusers folder."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    ).save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": 1000})
    )
    return folder


def ddae_cifar10(tiny: bool) -> tuple[torch.nn.Module, Callable[[int], tuple], int]:
    """DDAE's CIFAR-10 DDPM UNet (35.7 M: 128 wide, x(1, 2, 2, 2), attention at 16 px) as a diffusers UNet2DModel."""
    from diffusers import UNet2DModel

    if tiny:
        net = UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=8,
        )
        side = 8
    else:
        net = UNet2DModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(128, 256, 256, 256),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=None,
        )
        side = 32
    return net, lambda b: (torch.randn(b, 3, side, side), torch.full((b,), 100)), 256


def sd15_unet(tiny: bool) -> tuple[torch.nn.Module, Callable[[int], tuple], int]:
    """Diffusers' default UNet2DConditionModel (SD 1.5's 860 M UNet) at 64 x 64 latents (512 px)."""
    from diffusers import UNet2DConditionModel

    if tiny:
        net = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(8, 16),
            layers_per_block=1,
            cross_attention_dim=12,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=4,
            norm_num_groups=4,
        )
        side, context = 8, 12
    else:
        net, side, context = UNet2DConditionModel(sample_size=64, cross_attention_dim=768), 64, 768

    def inputs(b: int) -> tuple:
        return torch.randn(b, 4, side, side), torch.full((b,), 100), torch.randn(b, 77, context)

    return net, inputs, 8


def dit_xl2(tiny: bool) -> tuple[torch.nn.Module, Callable[[int], tuple], int]:
    """DiT-XL/2 (28 blocks x 1152 wide, 16 heads, patch 2) over 32 x 32 latents (256 px), class-conditioned.

    diffusers' layout has 750 M parameters, not the original 675 M: each block keeps its own copy
    of the timestep and class embedders (28 x 2.7 M); they cost no forward FLOPs to speak of.
    """
    from diffusers import DiTTransformer2DModel

    layers, heads, dim, side = (2, 2, 8, 8) if tiny else (28, 16, 72, 32)
    net = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=dim,
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        sample_size=side,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )

    def inputs(b: int) -> tuple:
        return torch.randn(b, 4, side, side), torch.full((b,), 100), torch.zeros(b, dtype=torch.long)

    return net, inputs, 64


def dinov2_large(tiny: bool) -> tuple[torch.nn.Module, Callable[[int], tuple], int]:
    """DINOv2 ViT-L/14 (24 x 1024, 16 heads) at 224 px."""
    from transformers import Dinov2Config, Dinov2Model

    config = (
        Dinov2Config(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=28,
            patch_size=14,
        )
        if tiny
        else Dinov2Config(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            image_size=224,
            patch_size=14,
        )
    )
    side = config.image_size
    return Dinov2Model(config), lambda b: (torch.randn(b, 3, side, side),), 128


MODELS = {
    "ddae-cifar10-35.7M": ddae_cifar10,
    "sd1.5-unet-512px": sd15_unet,
    "dit-xl-2-256px": dit_xl2,
    "dinov2-l-14-224px": dinov2_large,
}


def _call(net: torch.nn.Module, args: tuple) -> object:
    if len(args) == 1:
        return net(pixel_values=args[0])
    if len(args) == 3 and args[2].dtype == torch.long:
        return net(args[0], timestep=args[1], class_labels=args[2])
    if len(args) == 3:
        return net(args[0], args[1], encoder_hidden_states=args[2])
    return net(*args)


def forward_flops(net: torch.nn.Module, args: tuple) -> int:
    """FLOPs of one forward, counted on fake tensors (no arithmetic is done)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from probekit.features.flops import flop_counter

    with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = tuple(mode.from_tensor(arg) for arg in args)
        with flop_counter() as counter:
            _call(net, fake)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(
    name: str, build: Callable, device: torch.device, precision: str, tiny: bool, repeats: int
) -> list[Row]:
    net, make_inputs, batch = build(tiny)
    batch = 2 if tiny else batch
    net = net.eval().to(device)
    args = tuple(arg.to(device) for arg in make_inputs(batch))
    flops = forward_flops(net, args)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad(), autocast:
        _call(net, args)  # warm-up (kernel selection)
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            _call(net, args)
        _sync(device)
    seconds = (time.perf_counter() - started) / repeats
    params = sum(p.numel() for p in net.parameters())
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    note = f"{params / 1e6:.1f} M parameters, batch {batch}, {flops / batch / 1e9:.3g} GFLOP per image"
    del net
    return [
        Row("throughput", name, device.type, precision, "images_per_s", batch / seconds, seconds=seconds, note=note),
        Row(
            "throughput",
            name,
            device.type,
            precision,
            "achieved_tflops",
            flops / seconds / 1e12,
            seconds=seconds,
            note=note,
        ),
        Row("throughput", name, device.type, precision, "peak_memory_gib", memory, note=note),
    ]


def bench_linear(device: torch.device, tiny: bool) -> list[Row]:
    """The batched linear probe on ``device`` against scikit-learn's LogisticRegression (lbfgs) on the CPU."""
    from sklearn.linear_model import LogisticRegression

    from probekit.probes.linear import LinearProbeConfig, linear_probe_grid

    n, width, classes = (600, 16, 10) if tiny else (60_000, 1024, 10)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, width)).astype(np.float32)
    y = rng.integers(0, classes, n + n // 6)
    x = (centres[y] * 0.3 + rng.normal(size=(len(y), width))).astype(np.float32)
    train, test = x[:n], x[n:]
    started = time.perf_counter()
    ours = linear_probe_grid({"cell": train}, y[:n], {"cell": test}, y[n:], LinearProbeConfig(), device=device)["cell"]
    _sync(device)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    reference = LogisticRegression(C=LinearProbeConfig().C, max_iter=1000).fit(train, y[:n]).score(test, y[n:])
    sk_s = time.perf_counter() - started
    return [
        Row(
            "probe",
            f"linear {n} x {width}",
            device.type,
            "fp32",
            "test_top1",
            ours.top1,
            reference,
            0.01,
            abs(ours.top1 - reference) <= 0.01,
            ours_s,
            f"scikit-learn {sk_s:.1f} s: {sk_s / ours_s:.1f}x",
        ),
    ]


def bench_knn(device: torch.device, tiny: bool) -> list[Row]:
    from probekit.probes.knn import KnnConfig, knn_probe

    n_train, n_test, width = (2_000, 300, 32) if tiny else (1_281_167, 50_000, 768)
    rng = torch.Generator().manual_seed(0)
    train = torch.randn(n_train, width, generator=rng).numpy()
    test = torch.randn(n_test, width, generator=rng).numpy()
    y_train = np.arange(n_train) % 1000
    y_test = np.arange(n_test) % 1000
    started = time.perf_counter()
    knn_probe({"cell": train}, y_train, {"cell": test}, y_test, KnnConfig(k=20, num_classes=1000), device=device)
    _sync(device)
    seconds = time.perf_counter() - started
    return [
        Row("probe", f"knn {n_train} x {n_test} x {width}", device.type, "auto", "seconds", seconds, seconds=seconds)
    ]


# ----------------------------------------------------------------------------- agreement


def _cli(argv: list[str]) -> None:
    from probekit.cli import main

    code = main(argv)
    if code:
        raise RuntimeError(f"probekit {' '.join(argv)} exited with {code}")


def _features(path: Path) -> dict[str, np.ndarray]:
    from probekit.features.cache import FeatureCache

    with FeatureCache(path) as cache:
        return {f"{s}/{l.name}": cache.file[s]["feats"][l.name][:] for s in cache.splits for l in cache.layers}


def _accuracies(path: Path) -> dict[tuple, float]:
    import pandas as pd

    table = pd.read_csv(path)
    rows = table[(table["split"] == "test") & (table["metric"] == "top1")]
    return {(r.probe, r.t, r.layer): float(r.value) for r in rows.itertuples()}


#: 20 steps of a tiny DDPM UNet on 8 px digits, sample grid of 4 images in 2 steps
TRAIN_RECIPE = """\
unet: {sample_size: 8, in_channels: 1, out_channels: 1, block_out_channels: [8, 16], layers_per_block: 1,
       norm_num_groups: 4,
       down_block_types: [DownBlock2D, DownBlock2D], up_block_types: [UpBlock2D, UpBlock2D]}
batch_size: 16
total_steps: 20
warmup_steps: 2
checkpoint_every: 20
log_every: 5
sample_steps: 2
sample_count: 4
precision: fp32
"""


def agreement(device: torch.device, work: Path, tiny: bool = False) -> list[Row]:
    rows: list[Row] = []
    model = tiny_unet(work / "unet")
    n_train, n_test = (60, 30) if tiny else (120, 60)
    data = ["--data", "digits", "--train-limit", str(n_train), "--test-limit", str(n_test), "--no-download"]
    caches = {}
    sides = {"device": device.type, "cpu": "cpu"}  # the checked device and the reference (both "cpu" in the tests)
    for side, where in sides.items():
        for precision in ("fp32", "bf16"):
            out = work / f"feats-{side}-{precision}.h5"
            started = time.perf_counter()
            _cli(
                [
                    "extract",
                    "--model",
                    str(model),
                    *data,
                    "--out",
                    str(out),
                    "--timesteps",
                    "10,200",
                    "--device",
                    where,
                    "--precision",
                    precision,
                    "--quiet",
                    "--overwrite",
                    "--batch-size",
                    "64",
                ]
            )
            caches[(side, precision)] = (out, time.perf_counter() - started)
    reference = _features(caches[("cpu", "fp32")][0])
    for precision, tolerance in (("fp32", 1e-4), ("bf16", 0.1)):
        got = _features(caches[("device", precision)][0])
        worst = max(
            float(np.abs(got[k] - reference[k]).max() / (np.abs(reference[k]).max() + 1e-12)) for k in reference
        )
        rows.append(
            Row(
                "agreement",
                "extract",
                device.type,
                precision,
                "max_rel_diff_vs_cpu_fp32",
                worst,
                0.0,
                tolerance,
                worst <= tolerance,
                caches[("device", precision)][1],
            )
        )
    cache = caches[("cpu", "fp32")][0]
    for probe, tolerance in (("linear", 0.02), ("knn", 1 / n_test + 1e-9), ("sgd", 0.05), ("mlp", 0.05)):
        tables = {}
        for side, where in sides.items():
            out = work / f"results-{probe}-{side}.csv"
            started = time.perf_counter()
            _cli(["probe", "--cache", str(cache), "--probes", probe, "--out", str(out), "--device", where, "--quiet"])
            tables[side] = (_accuracies(out), time.perf_counter() - started)
        ours, ref = tables["device"][0], tables["cpu"][0]
        worst = max(abs(ours[key] - ref[key]) for key in ref)
        rows.append(
            Row(
                "agreement",
                f"probe {probe}",
                device.type,
                "auto",
                "max_abs_top1_diff_vs_cpu",
                worst,
                0.0,
                tolerance,
                worst <= tolerance,
                tables["device"][1],
                f"{len(ref)} cells",
            )
        )
    finals = {}
    for side, where in sides.items():
        out = work / f"finetune-{side}"
        started = time.perf_counter()
        _cli(
            [
                "finetune",
                "--model",
                str(model),
                *data,
                "--out",
                str(out),
                "--timestep",
                "10",
                "--layer",
                "mid_block",
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--device",
                where,
                "--quiet",
            ]
        )
        finals[side] = (_accuracies(out / "results.csv"), time.perf_counter() - started)
    worst = max(abs(finals["device"][0][k] - finals["cpu"][0][k]) for k in finals["cpu"][0])
    rows.append(
        Row(
            "agreement",
            "finetune",
            device.type,
            "fp32",
            "max_abs_top1_diff_vs_cpu",
            worst,
            0.0,
            0.10,
            worst <= 0.10,
            finals["device"][1],
        )
    )
    losses = {}
    recipe = work / "train.yaml"
    recipe.write_text(TRAIN_RECIPE)
    for side, where in sides.items():
        out = work / f"train-{side}"
        started = time.perf_counter()
        _cli(
            [
                "train",
                "--config",
                str(recipe),
                "--out",
                str(out),
                "--data",
                "digits",
                "--train-limit",
                "200",
                "--device",
                where,
                "--quiet",
            ]
        )
        last = (out / "loss.csv").read_text().strip().splitlines()[-1].split(",")
        losses[side] = (float(last[1]), time.perf_counter() - started)
    relative = abs(losses["device"][0] - losses["cpu"][0]) / losses["cpu"][0]
    rows.append(
        Row(
            "agreement",
            "train",
            device.type,
            "fp32",
            "last_loss_rel_diff_vs_cpu",
            relative,
            0.0,
            0.10,
            relative <= 0.10,
            losses["device"][1],
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device", default="cuda", help="the device to check (cuda; cpu runs the same code on the CPU)"
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/results/device_check.csv"))
    parser.add_argument(
        "--tiny", action="store_true", help="part 2 at tiny sizes, part 1 on half the images (what the test suite runs)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model (after one warm-up)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: agreement, models, linear, knn")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "device_check: no CUDA GPU is visible; run it on a GPU machine or pass --device cpu --tiny", file=sys.stderr
        )
        return 2
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    from probekit.core.precision import machine_description

    rows: list[Row] = [
        Row("machine", machine_description(device), device.type, "", "torch", float("nan"), note=torch.__version__)
    ]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        if "agreement" not in skip:
            rows += agreement(device, Path(work), args.tiny)
    if "models" not in skip:
        for name, build in MODELS.items():
            for precision in (
                ("fp32", "bf16") if name.startswith("ddae") else ("bf16",) if device.type == "cuda" else ("fp32",)
            ):
                rows += bench_model(name, build, device, precision, args.tiny, 1 if args.tiny else args.repeats)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if "linear" not in skip:
        rows += bench_linear(device, args.tiny)
    if "knn" not in skip:
        rows += bench_knn(device, args.tiny)
    rows.append(Row("machine", "total", device.type, "", "seconds", time.perf_counter() - started))
    write_rows(rows, args.out)
    failed = [row for row in rows if row.passed is False]
    for row in rows:
        print(
            f"{row.section:<10} {row.check:<34} {row.precision:<5} {row.metric:<26} {row.value:10.4g}"
            + ("" if row.passed is None else ("  ok" if row.passed else f"  FAILED (tolerance {row.tolerance})"))
        )
    print(f"wrote {args.out}: {len(rows)} rows, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
