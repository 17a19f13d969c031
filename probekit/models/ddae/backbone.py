"""A DDAE network plus its schedule as a probekit :class:`Backbone`.

``features`` hooks the requested layers of :class:`DDAEUNet` (names in :mod:`.unet`), feeds the
network as DDAE does (``t / n_T`` for DDPM; ``c_in * x`` and ``log(sigma) / 4`` for EDM) and stops
the forward after the deepest requested layer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ...errors import ProbekitError
from ...pooling import Pooling
from ...schedule import GridPoint
from ..backbone import Backbone, LayerInfo, run_and_capture, state_dict_sha256
from .schedules import DDAESchedule
from .unet import DDAEUNet, NamedLayer


class DDAEBackbone(Backbone):
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
        self._modules = {layer.name: modules[layer.path] for layer in named}
        self._layers = self._trace(named)
        self._depth = {layer.name: layer.depth for layer in self._layers}
        self._canonical = {alias: layer.name for layer in self._layers for alias in (layer.name, *layer.aliases)}
        self._sha256: str | None = None

    def _trace(self, named: list[NamedLayer]) -> list[LayerInfo]:
        """One blank forward records each layer's output shape (channels, resolution)."""
        shapes: dict[str, torch.Size] = {}
        handles = [
            module.register_forward_hook(lambda _m, _a, out, name=name: shapes.__setitem__(name, out.shape))
            for name, module in self._modules.items()
        ]
        try:
            blank = torch.zeros(1, self.input_channels, *self.input_size, device=self.device)
            with torch.no_grad():
                self.net(blank, torch.zeros(1, device=self.device))
        finally:
            for handle in handles:
                handle.remove()
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

    def layers(self) -> list[LayerInfo]:
        return list(self._layers)

    def _raw(self, x_noisy: torch.Tensor, point: GridPoint) -> torch.Tensor:
        x_in, t_in = self.schedule.network_inputs(x_noisy, point)
        return self.net(x_in, t_in)

    def features(
        self, x_noisy: torch.Tensor, point: GridPoint, layers: Sequence[str], pooling: Pooling
    ) -> dict[str, torch.Tensor]:
        canonical = {name: self._canonical_name(name) for name in layers}
        wanted = {name: self._modules[name] for name in canonical.values()}
        deepest = max(wanted, key=lambda name: self._depth[name])
        captured = run_and_capture(lambda: self._raw(x_noisy, point), wanted, pooling, stop_after=deepest)
        return {name: captured[canonical[name]] for name in layers}

    def forward(self, x_noisy: torch.Tensor, point: GridPoint) -> torch.Tensor:
        """DDAE's model output: predicted noise (DDPM) or the denoised image D(x) (EDM)."""
        with torch.no_grad():
            return self.schedule.denoiser_output(x_noisy, self._raw(x_noisy, point), point)

    def _canonical_name(self, name: str) -> str:
        if name not in self._canonical:
            raise ProbekitError(f"unknown layer {name!r}: run `probekit layers --model {self.model_id}` to list them")
        return self._canonical[name]

    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = state_dict_sha256(self.net)
        return self._sha256

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> "DDAEBackbone":
        self.net.to(device)
        return self
