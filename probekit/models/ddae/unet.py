"""DDAE's UNet (plain DDPM layout, or DDPM++ with residual resampling) and its readable layers.

Layer names, in forward order:

* ``stem`` -- the input convolution (``image_proj``)
* ``in_1 .. in_K`` -- the encoder's residual(+attention) blocks, numbered in forward order
* ``downsample_1 ..`` -- the encoder's downsamplers (conv, or residual for DDPM++)
* ``mid_res1``, ``mid_attn``, ``mid`` -- inside the middle block; ``mid`` is its output
* ``out_1 .. out_N`` -- the decoder's residual(+attention) blocks, numbered exactly as DDAE's
  ``ret_activation`` does (upsamplers are not counted), so ``out_6`` here is DDAE's ``out_6``
* ``upsample_1 ..`` -- the decoder's upsamplers

Each layer also answers to its module path in DDAE's network (``down.3``, ``middle``, ``up.5``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from probekit.models.ddae.blocks import (
    ConvDownsample,
    ConvUpsample,
    MiddleBlock,
    ResAttnBlock,
    ResResample,
    TimestepEmbedding,
)
from probekit.models.ddae.config import FINAL_NORM_GROUPS, NetworkConfig


@dataclass(frozen=True)
class NamedLayer:
    """A readable module: probekit name, stage, and its path in DDAE's module tree."""

    name: str
    stage: str  # "down" | "mid" | "up"
    path: str


class DDAEUNet(nn.Module):
    """Same-shape noise-prediction UNet; ``forward(x, t)`` with ``t`` the scalar the network is fed."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        base, time_channels, dropout = config.n_channels, config.time_channels, config.dropout
        head = config.attn_channels_per_head
        widths = config.stage_channels()
        levels = len(widths)

        self.image_proj = nn.Conv2d(config.image_shape[0], base, 3, padding=1)
        self.time_emb = TimestepEmbedding(time_channels, config.augment_dim)

        # Encoder: every entry's output is kept as a skip; `skips` tracks their widths.
        down: list[nn.Module] = []
        skips, width = [base], base
        for level, out_width in enumerate(widths):
            for _ in range(config.n_blocks):
                down.append(ResAttnBlock(width, out_width, time_channels, config.is_attn[level], head, dropout))
                width = out_width
                skips.append(width)
            if level < levels - 1:
                down.append(
                    ResResample(width, time_channels, dropout, "down")
                    if config.use_res_for_updown
                    else ConvDownsample(width)
                )
                skips.append(width)
        self.down = nn.ModuleList(down)
        self.middle = MiddleBlock(width, time_channels, head, dropout)

        # Decoder: n_blocks + 1 blocks per resolution, each consuming one skip (popped last-first).
        up: list[nn.Module] = []
        for level in reversed(range(levels)):
            out_width = widths[level]
            for _ in range(config.n_blocks + 1):
                up.append(
                    ResAttnBlock(width + skips.pop(), out_width, time_channels, config.is_attn[level], head, dropout)
                )
                width = out_width
            if level > 0:
                up.append(
                    ResResample(width, time_channels, dropout, "up")
                    if config.use_res_for_updown
                    else ConvUpsample(width)
                )
        self.up = nn.ModuleList(up)

        self.norm = nn.GroupNorm(FINAL_NORM_GROUPS, width)
        self.final = nn.Conv2d(width, config.image_shape[0], 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) network input; ``t``: (B,) the noise input (t/n_T or log(sigma)/4)."""
        emb = self.time_emb(t)
        x = self.image_proj(x)
        skips = [x]
        for module in self.down:
            x = module(x, emb)
            skips.append(x)
        x = self.middle(x, emb)
        for module in self.up:
            if isinstance(module, ResAttnBlock):
                x = module(torch.cat((x, skips.pop()), dim=1), emb)
            else:
                x = module(x, emb)
        return self.final(nn.functional.silu(self.norm(x)))

    def named_layers(self) -> list[NamedLayer]:
        """The readable modules in forward order (see the module docstring for the names)."""
        return [
            NamedLayer("stem", "down", "image_proj"),
            *_numbered(self.down, "down", "in", "downsample"),
            NamedLayer("mid_res1", "mid", "middle.res1"),
            NamedLayer("mid_attn", "mid", "middle.attn"),
            NamedLayer("mid", "mid", "middle"),
            *_numbered(self.up, "up", "out", "upsample"),
        ]


def _numbered(stage: nn.ModuleList, path: str, block_name: str, sampler_name: str) -> list[NamedLayer]:
    """``block_name_1, ...`` for the residual blocks and ``sampler_name_1, ...`` for the resamplers of one
    stage, each counted on its own, as DDAE's code numbers them.
    """
    layers, blocks, samplers = [], 0, 0
    for index, module in enumerate(stage):
        if isinstance(module, ResAttnBlock):
            blocks += 1
            layers.append(NamedLayer(f"{block_name}_{blocks}", path, f"{path}.{index}"))
        else:
            samplers += 1
            layers.append(NamedLayer(f"{sampler_name}_{samplers}", path, f"{path}.{index}"))
    return layers
