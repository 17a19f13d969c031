"""diffusers ``UNet2DModel`` as a Backbone: every resnet and attention block of the down, mid and
up paths, plus the block (stage) outputs, in forward order.

Forward order, channels and resolution are not guessed from the config: one forward of a blank
input at load time records them. A block whose output *is* its last sub-module's output (a down
block without a downsampler, the mid block) is listed once, under the sub-module's name, with the
block name kept as an alias.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ..errors import ProbekitError
from ..pooling import Pooling
from ..schedule import GridPoint, NoiseSchedule
from .backbone import Backbone, LayerInfo, _primary, run_and_capture, state_dict_sha256

_CANDIDATE = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)(\.(resnets|attentions)\.\d+)?$")


def _stage(name: str) -> str:
    return {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[name.split(".")[0]]


class UNetBackbone(Backbone):
    """Wraps a ``UNet2DModel``; ``t`` is the diffusers timestep index and the net sees it as is."""

    framework = "diffusers-unet2d"
    value_range = (-1.0, 1.0)

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, model_id: str) -> None:
        config = net.config
        if getattr(config, "num_class_embeds", None) or getattr(config, "class_embed_type", None):
            raise ProbekitError(f"{model_id} is class-conditional; probekit probes unconditional UNet2DModels only")
        self.net = net.eval().requires_grad_(False)
        self.schedule = schedule
        self.model_id = model_id
        size = config.sample_size
        self.input_size = (size, size) if isinstance(size, int) else tuple(size)
        self.input_channels = int(config.in_channels)
        self._modules = {name: m for name, m in self.net.named_modules() if _CANDIDATE.match(name)}
        self._layers = self._trace_layers()
        self._depth = {layer.name: layer.depth for layer in self._layers}
        self._canonical = {alias: layer.name for layer in self._layers for alias in (layer.name, *layer.aliases)}
        self._sha256: str | None = None

    def _trace_layers(self) -> list[LayerInfo]:
        """Run one blank forward and record each candidate's completion order and output shape."""
        order: list[tuple[str, torch.Tensor]] = []
        handles = [
            module.register_forward_hook(lambda _m, _a, out, name=name: order.append((name, _primary(out))))
            for name, module in self._modules.items()
        ]
        try:
            blank = torch.zeros(1, self.input_channels, *self.input_size, device=self.device)
            with torch.no_grad():
                self.net(blank, torch.zeros(1, device=self.device))
        finally:
            for handle in handles:
                handle.remove()

        layers: list[LayerInfo] = []
        previous_output = None
        for name, output in order:
            # The same tensor object as the module that finished just before: the block passes its
            # last sub-module's output through, so keep one entry and remember the block's name.
            if output is previous_output:
                layers[-1] = replace(layers[-1], aliases=layers[-1].aliases + (name,))
                continue
            previous_output = output
            layers.append(
                LayerInfo(
                    name=name,
                    stage=_stage(name),
                    depth=len(layers),
                    channels=int(output.shape[1]),
                    resolution=f"{output.shape[2]}x{output.shape[3]}",
                )
            )
        return layers

    def layers(self) -> list[LayerInfo]:
        return list(self._layers)

    def _run(self, x: torch.Tensor, point: GridPoint) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device, dtype=torch.float32)
        return self.net(x, timesteps).sample

    def features(
        self, x_noisy: torch.Tensor, point: GridPoint, layers: Sequence[str], pooling: Pooling
    ) -> dict[str, torch.Tensor]:
        canonical = {name: self._canonical_name(name) for name in layers}
        wanted = {name: self._modules[name] for name in canonical.values()}
        deepest = max(wanted, key=lambda name: self._depth[name])
        captured = run_and_capture(lambda: self._run(x_noisy, point), wanted, pooling, stop_after=deepest)
        return {name: captured[canonical[name]] for name in layers}

    def forward(self, x_noisy: torch.Tensor, point: GridPoint) -> torch.Tensor:
        with torch.no_grad():
            return self._run(x_noisy, point)

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

    def to(self, device: torch.device | str) -> "UNetBackbone":
        self.net.to(device)
        return self

