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

import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint, LayerInfo
from probekit.models.backbone import HookedBackbone
from probekit.models.trace import run_traced

_CANDIDATE = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)(\.(resnets|attentions)\.\d+)?$")


def _stage(name: str) -> str:
    return {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[name.split(".")[0]]


class UNetBackbone(HookedBackbone):
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
        candidates = {name: m for name, m in self.net.named_modules() if _CANDIDATE.match(name)}
        self._register(candidates, self._trace_layers(candidates))

    def _trace_layers(self, candidates: dict[str, nn.Module]) -> list[LayerInfo]:
        """Run one blank forward and record each candidate's completion order and output shape."""
        blank = torch.zeros(1, *self._network_input_shape(), device=self.device)
        outputs = run_traced(
            lambda: self._run(blank, self.schedule.point(0)), candidates, pooling=None, select=self._output
        )

        layers: list[LayerInfo] = []
        previous_output = None
        for name, output in outputs.items():
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

    def _network_input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the network itself reads (pixel-space here; latents for latent models)."""
        return (self.input_channels, *self.input_size)

    def _blank_input(self) -> torch.Tensor:
        return torch.zeros(1, *self._network_input_shape())

    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), point.model_input, device=x.device, dtype=torch.float32)
        return self.net(x, timesteps).sample
