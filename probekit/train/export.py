"""Package a training run as a shippable checkpoint folder with a model card."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from probekit.core.errors import ProbekitError
from probekit.train.config import TrainConfig
from probekit.train.families import get_family


def export_checkpoint(
    run: str | Path,
    dest: str | Path,
    *,
    intermediate_steps: Sequence[int] = (),
    intermediate_dtype: torch.dtype = torch.float16,
    dtype: torch.dtype | None = None,
    note: str | None = None,
) -> Path:
    """Copy the run's latest EMA model to ``dest`` (weights cast to ``dtype``, None: as saved) with its
    samples, loss curve, record and a model card; add the EMA checkpoints of ``intermediate_steps``
    under ``dest/intermediate/`` in ``intermediate_dtype`` (for accuracy-over-training plots).
    A run still in progress exports its last checkpoint, and the card says how many steps it had.
    ``note`` is added to the card as a paragraph of its own (what a reader of these weights should know).
    """
    run, dest = Path(run), Path(dest)
    record_path = run / "record.json"
    if not record_path.is_file():
        raise ProbekitError(f"{run} is not a finished probekit training run (no record.json): train it first")
    record = json.loads(record_path.read_text())
    family = get_family(record["recipe"].get("family", "ddpm"))
    config = TrainConfig.from_dict(record["recipe"])
    if dest.exists():
        shutil.rmtree(dest)
    step = record["steps"]
    # The checkpoint of the record's step, not model/: a run still training rewrites model/ first.
    files = family.export(run / "checkpoints" / f"step-{step:07d}", dest, dtype)
    shutil.copy2(run / "samples" / f"step-{step:07d}.png", dest / "samples.png")
    _copy_losses(run / "loss.csv", dest / "loss.csv", step)
    plot_loss(dest / "loss.csv", dest / "loss.png", title=f"{record['recipe'].get('family', 'ddpm')} training loss")
    (dest / "record.json").write_text(json.dumps(record, indent=2))
    for s in intermediate_steps:
        source = run / "checkpoints" / f"step-{s:07d}"
        if not source.is_dir():
            raise ProbekitError(
                f"{run} has no checkpoint at step {s}: choose among "
                f"{sorted(p.name for p in (run / 'checkpoints').iterdir())}"
            )
        family.export(source, dest / "intermediate" / f"step-{s:07d}", intermediate_dtype)
    card = model_card(record, run / "loss.csv", intermediate_steps, config, files, dtype, dest)
    if note:
        card += f"\n{note.strip()}\n"
    (dest / "README.md").write_text(card)
    return dest


def _copy_losses(source: Path, dest: Path, step: int) -> None:
    """The loss log up to ``step`` (a run still training may have logged further)."""
    with source.open() as f:
        rows = list(csv.reader(f))
    with dest.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [row for row in rows[1:] if int(row[0]) <= step])


def plot_loss(loss_csv: Path, out: Path, *, title: str) -> Path:
    """The logged training loss (mean over each logging interval) against the step, log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with loss_csv.open() as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(5.0, 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], color="C0")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    ax.grid(alpha=0.3)
    fig.savefig(out, format="png", dpi=120)
    return out


_TITLES = {"ddpm": "DDPM UNet", "dit": "DiT", "edm": "EDM UNet", "flow": "flow-matching transformer (SiT)"}


def _noise_row(config: TrainConfig) -> str:
    if config.family in ("ddpm", "dit"):
        return (
            f"DDPM, {config.beta_schedule} betas {config.beta_start}..{config.beta_end}, T = "
            f"{config.num_train_timesteps}"
        )
    if config.family == "edm":
        return (
            f"EDM, ln sigma ~ N({config.p_mean}, {config.p_std}^2), sigma_data {config.sigma_data}; sampling sigmas "
            f"{config.sigma_min}..{config.sigma_max}, rho {config.rho}"
        )
    return "linear path x_t = t x0 + (1 - t) eps (SiT time t, data at 1), t uniform in [0, 1]"


def model_card(
    record: dict,
    loss_csv: Path,
    intermediate_steps: Sequence[int],
    config: TrainConfig | None = None,
    files: Sequence[str] = (),
    dtype: torch.dtype | None = None,
    dest: Path | None = None,
) -> str:
    recipe = record["recipe"]
    config = config or TrainConfig.from_dict(recipe)
    family = get_family(config.family)
    with loss_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= record["steps"]]
    if not rows:
        raise ProbekitError(f"{loss_csv} has no loss logged up to step {record['steps']}: train longer first")
    last_losses = [float(r["loss"]) for r in rows[-10:]]
    spec = family.model_spec(dest if dest is not None else Path("<this folder>"), config)
    images_per_second = record.get("images_per_second") or record["images_seen"] / record["wall_seconds"]
    weights = "as trained (float32)" if dtype is None else f"{str(dtype).replace('torch.', '')}, loaded as float32"
    lines = [
        f"# {recipe['data']} {_TITLES[config.family]} (probekit train)",
        "",
        f"Pretrained only to denoise ({family.objective}); class labels were never used.",
        f"These are the EMA weights. Probe them with `probekit extract --model {spec} ...`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| family | {config.family} |",
        f"| architecture | {family.describe_network(config)}, {record['parameters'] / 1e6:.2f} M parameters |",
        f"| noise | {_noise_row(config)} |",
        f"| optimiser | AdamW lr {recipe['lr']}, weight decay {recipe['weight_decay']}, {recipe['warmup_steps']} "
        "warm-up steps, "
        f"gradient clip {recipe['grad_clip']}, batch {recipe['batch_size']}, EMA decay {recipe['ema_decay']} |",
        f"| augmentation | random horizontal flip: {recipe['hflip']} |",
        f"| precision | {recipe['precision']} |",
        f"| steps | {record['steps']} (recipe: {recipe['total_steps']}) |",
        f"| images seen | {record['images_seen']} ({record['epochs']} epochs of {record['train_images']} images) |",
        f"| wall time | {record['wall_seconds'] / 3600:.2f} h ({images_per_second:.1f} images/s including checkpoints "
        "and sample grids; on a shared machine this includes waiting for other work, see docs/guide/training.md "
        "for the CPU cost per step) |",
        f"| machine | {record['machine']} |",
        f"| final training loss (mean of the last {len(last_losses)} logged) | "
        f"{sum(last_losses) / len(last_losses):.4f} |",
        "",
        "Training loss (`loss.csv`):",
        "",
        "![loss](loss.png)",
        "",
        f"Samples of these weights ({recipe['sample_steps']} deterministic sampler steps):",
        "",
        "![samples](samples.png)",
        "",
        f"Files: {', '.join(f'`{name}`' for name in files)} (weights {weights}), `loss.csv` (step, loss, lr), "
        "`record.json` (the full recipe), `samples.png`, `loss.png`.",
    ]
    origin = record.get("continued_from")
    if origin:
        lines += [
            "",
            f"Continued at step {origin['step']} from `{origin['folder']}` as it was shipped at that step "
            "(`--continue-from`): "
            f"{origin['how']}. The steps, data order, noise draws and learning rate went on as in one run; "
            "the wall time counts both parts.",
        ]
    if intermediate_steps:
        lines += [
            "",
            "Intermediate EMA checkpoints of the same run (float16 weights, loaded as float32), each loaded like "
            "this folder: " + ", ".join(f"`intermediate/step-{s:07d}`" for s in intermediate_steps) + ".",
        ]
    return "\n".join(lines) + "\n"
