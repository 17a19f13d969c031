"""EDM (Karras et al. 2022) as DDAE trains it: DDAE's UNet behind EDM's preconditioning.

A step draws ``ln sigma ~ N(p_mean, p_std^2)``, noises ``y = x0 + sigma eps`` and minimises
``lambda(sigma) |D(y, sigma) - x0|^2`` with ``lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``
and ``D = c_skip y + c_out F(c_in y, c_noise)``: ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``,
``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``, ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``
and ``c_noise = ln(sigma) / 4`` (DDAE's ``model/EDM.py``). The run is saved in DDAE's own layout,
a training ``config.yaml`` and a ``model.pth`` with ``MODEL`` and ``EMA`` entries, which
``probekit.models.ddae`` loads (``ddae:CONFIG.yaml:CHECKPOINT.pth``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.models.ddae import DDAEUNet, NetworkConfig
from probekit.train.families.base import TrainFamily

if TYPE_CHECKING:
    from probekit.train.config import TrainConfig

CHECKPOINT, CONFIG = "model.pth", "config.yaml"
_TUPLES = ("image_shape", "ch_mults", "is_attn")


def network_config(config: TrainConfig) -> NetworkConfig:
    """DDAE's ``network`` section from the recipe's ``network`` mapping (DDAE's own key names)."""
    raw: dict[str, Any] = dict(config.network or {})
    try:
        fields: dict[str, Any] = {k: tuple(v) if k in _TUPLES else v for k, v in raw.items()}
        return NetworkConfig(**fields)
    except TypeError as err:
        raise ProbekitError(f"the edm recipe's `network` does not fit DDAE's UNet: {err}") from err


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) of EDM at noise levels ``sigma``."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


def denoise(model: nn.Module, y: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's denoiser ``D(y, sigma)`` for (B,) ``sigma``."""
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, sigma_data)
    shape = (-1, 1, 1, 1)
    raw = model(c_in.view(shape) * y, c_noise)
    return c_skip.view(shape) * y + c_out.view(shape) * raw.float()


def karras_sigmas(config: TrainConfig, steps: int) -> torch.Tensor:
    """``steps`` sigmas from sigma_max down to sigma_min (rho spacing), then 0."""
    ramp = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    hi, lo = config.sigma_max ** (1 / config.rho), config.sigma_min ** (1 / config.rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** config.rho, torch.zeros(1, dtype=torch.float64)])


class EDMFamily(TrainFamily):
    name = "edm"
    objective = "EDM denoiser D(x) with Karras preconditioning, ln sigma ~ N(p_mean, p_std^2)"

    def build(self, config: TrainConfig) -> nn.Module:
        return DDAEUNet(network_config(config))

    def image_shape(self, config: TrainConfig) -> tuple[int, int]:
        channels, height, width = network_config(config).image_shape
        if height != width:
            raise ProbekitError(f"the edm recipe's image_shape must be square, got {height}x{width}")
        return height, channels

    def draw(self, config, generator: torch.Generator, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        normal = torch.randn(shape[0], generator=generator)
        return {
            "sigma": (normal * config.p_std + config.p_mean).exp(),
            "noise": torch.randn(shape, generator=generator),
        }

    def loss(self, model, x0, draws, config, autocast) -> torch.Tensor:
        sigma = draws["sigma"].to(x0.device)
        y = x0 + sigma[:, None, None, None] * draws["noise"]
        with autocast:
            denoised = denoise(model, y, sigma, config.sigma_data)
        weight = (sigma**2 + config.sigma_data**2) / (sigma * config.sigma_data) ** 2
        return (weight[:, None, None, None] * (denoised - x0) ** 2).mean()

    @torch.no_grad()
    def sample(self, model: nn.Module, noise: torch.Tensor, config) -> torch.Tensor:
        """EDM's deterministic Heun sampler over ``config.sample_steps`` Karras sigmas (denoised clipped to
        [-1, 1], as DDAE's sampler does).
        """
        sigmas = karras_sigmas(config, config.sample_steps).tolist()
        x = noise * sigmas[0]

        def slope(x: torch.Tensor, sigma: float) -> torch.Tensor:
            level = torch.full((x.shape[0],), sigma, device=x.device)
            return (x - denoise(model, x, level, config.sigma_data).clamp(-1, 1)) / sigma

        for i, (now, nxt) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            d = slope(x, now)
            x_next = x + (nxt - now) * d
            if i < len(sigmas) - 2:  # no correction on the last step, which lands on sigma = 0
                x_next = x + (nxt - now) * 0.5 * (d + slope(x_next, nxt))
            x = x_next
        return x

    def ddae_config(self, config: TrainConfig) -> dict[str, Any]:
        """The training config in DDAE's YAML layout (what its loader and its train.py read)."""
        net = network_config(config)
        return {
            "model_type": "EDM",
            "net_type": "UNet",
            "diffusion": {
                "sigma_data": config.sigma_data,
                "p_mean": config.p_mean,
                "p_std": config.p_std,
                "sigma_min": config.sigma_min,
                "sigma_max": config.sigma_max,
                "rho": config.rho,
            },
            "network": {
                "image_shape": list(net.image_shape),
                "n_channels": net.n_channels,
                "ch_mults": list(net.ch_mults),
                "is_attn": list(net.is_attn),
                "attn_channels_per_head": net.attn_channels_per_head,
                "dropout": net.dropout,
                "n_blocks": net.n_blocks,
                "use_res_for_updown": net.use_res_for_updown,
            },
            "batch_size": config.batch_size,
            "lrate": config.lr,
            "flip": config.hflip,
            "ema": config.ema_decay,
        }

    def save(self, ema: nn.Module, model: nn.Module, config: TrainConfig, folder: Path, step: int) -> None:
        folder.mkdir(parents=True)
        (folder / CONFIG).write_text(yaml.safe_dump(self.ddae_config(config), sort_keys=False))
        # DDAE's train.py layout: the diffusion wrapper's weights under nn_model., the EMA
        # (ema-pytorch) under ema_model.nn_model. with its counters.
        checkpoint = {
            "MODEL": {f"nn_model.{k}": v.detach().clone() for k, v in model.state_dict().items()},
            "EMA": {
                **{f"ema_model.nn_model.{k}": v.detach().clone() for k, v in ema.state_dict().items()},
                "initted": torch.tensor(True),
                "step": torch.tensor(step),
            },
        }
        torch.save(checkpoint, folder / CHECKPOINT)

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        """The EMA entry (what :meth:`export` keeps), under DDAE's ``ema_model.nn_model.`` prefix."""
        ema = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)["EMA"]
        prefix = "ema_model.nn_model."
        model.load_state_dict({k[len(prefix) :]: v.float() for k, v in ema.items() if k.startswith(prefix)})

    def model_spec(self, folder: Path, config: TrainConfig) -> str:
        return f"ddae:{folder / CONFIG}:{folder / CHECKPOINT}"

    def export(self, source: Path, dest: Path, dtype: torch.dtype | None) -> list[str]:
        """The config and the EMA entry only (the weights DDAE probes); float weights cast to ``dtype``."""
        dest.mkdir(parents=True, exist_ok=True)
        (dest / CONFIG).write_text((source / CONFIG).read_text())
        ema = torch.load(source / CHECKPOINT, map_location="cpu", weights_only=True)["EMA"]
        if dtype is not None:
            ema = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ema.items()}
        torch.save({"EMA": ema}, dest / CHECKPOINT)
        return [CONFIG, CHECKPOINT]

    def describe_network(self, config: TrainConfig) -> str:
        net = network_config(config)
        channels, side, _ = net.image_shape
        return (
            f"DDAE UNet{' (DDPM++ residual resampling)' if net.use_res_for_updown else ''}, "
            f"{net.n_channels} x {list(net.ch_mults)} channels, {net.n_blocks} blocks per resolution, attention at "
            f"{[i for i, a in enumerate(net.is_attn) if a]}, dropout {net.dropout}, {side}x{side}x{channels}"
        )
