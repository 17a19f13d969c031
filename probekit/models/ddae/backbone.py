"""A DDAE network plus its schedule as a probekit :class:`Backbone`.

``features`` hooks the requested layers of :class:`DDAEUNet` (names in :mod:`.unet`), feeds the
network as DDAE does (``t / n_T`` for DDPM; ``c_in * x`` and ``log(sigma) / 4`` for EDM) and stops
the forward after the deepest requested layer.
"""

from __future__ import annotations

import torch

from probekit.core.types import GridPoint, LayerInfo
from probekit.models.backbone import HookedBackbone
from probekit.models.ddae.schedules import DDAESchedule
from probekit.models.ddae.unet import DDAEUNet, NamedLayer
from probekit.models.trace import run_traced


class DDAEBackbone(HookedBackbone):
    """DDAE's UNet; inputs are images in [-1, 1] noised by :attr:`schedule` (t as DDAE numbers it)."""

    value_range = (-1.0, 1.0)

    def __init__(self, net: DDAEUNet, schedule: DDAESchedule, model_id: str, framework: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.schedule = schedule
        self.model_id = model_id
        self.framework = framework
        channels, height, width = net.config.image_shape
        self.input_size = (height, width)
        self.input_channels = channels
        named = net.named_layers()
        modules = dict(net.named_modules())
        by_name = {layer.name: modules[layer.path] for layer in named}
        self._register(by_name, self._trace(named, by_name))

    def _trace(self, named: list[NamedLayer], by_name: dict[str, torch.nn.Module]) -> list[LayerInfo]:
        """One blank forward records each layer's output shape (channels, resolution)."""
        blank = torch.zeros(1, self.input_channels, *self.input_size, device=self.device)
        outputs = run_traced(lambda: self.net(blank, torch.zeros(1, device=self.device)), by_name, pooling=None)
        shapes = {name: output.shape for name, output in outputs.items()}
        return [
            LayerInfo(
                name=layer.name,
                stage=layer.stage,
                depth=depth,
                channels=int(shapes[layer.name][1]),
                resolution=f"{shapes[layer.name][2]}x{shapes[layer.name][3]}",
                aliases=(layer.path,),
            )
            for depth, layer in enumerate(named)
        ]

    def _run(self, x_noisy: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        x_in, t_in = self.schedule.network_inputs(x_noisy, point)
        return self.net(x_in, t_in)

    def forward(self, x_noisy: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        """DDAE's model output: predicted noise (DDPM) or the denoised image D(x) (EDM)."""
        with torch.no_grad():
            return self.schedule.denoiser_output(x_noisy, self._run(x_noisy, point), point)
