"""Pooling of a layer's activation into one vector per image.

``gap`` is global average pooling (the DDAE paper). ``avgK`` is K x K adaptive average pooling,
flattened channel-major to ``C * K * K`` values. ``spatialS`` computes the same S x S adaptive
average but marks the cache as spatial: it stores the (C, S, S) grid of every cell (float16 by
default) for the dense analyses (``probekit segment`` / ``correspond``), which read it back as a
feature map; vector layers (B, D) have no grid and are refused. Token sequences ``(B, N, C)`` are pooled over
tokens (``gap``) or over their square token grid (``avgK``). Vectors ``(B, D)`` pass unchanged.

Pooling always runs and returns in float32, also on bf16 / fp16 activations under autocast: the
averages are accumulated and kept at float32 resolution instead of being rounded to 8 or 11 bits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from probekit.core.errors import ProbekitError


@dataclass(frozen=True)
class Pooling:
    """``k == 1`` is global average pooling; ``k > 1`` keeps a coarse k x k spatial layout."""

    k: int = 1
    #: read the class token instead of averaging (vision encoders only: they place it first)
    cls: bool = False
    #: keep the k x k grid as a feature map (``spatialS``): the cache records its side
    spatial: bool = False

    @property
    def name(self) -> str:
        if self.cls:
            return "cls"
        if self.spatial:
            return f"spatial{self.k}"
        return "gap" if self.k == 1 else f"avg{self.k}"

    @classmethod
    def parse(cls, text: str) -> Pooling:
        """``gap``, ``avgK`` (for example ``avg2``), ``spatialS`` (for example ``spatial8``) or ``cls``."""
        spatial = re.fullmatch(r"spatial([1-9][0-9]*)", text)
        if spatial:
            return cls(int(spatial.group(1)), spatial=True)
        if text == "gap":
            return cls(1)
        if text == "cls":
            return cls(1, cls=True)
        match = re.fullmatch(r"avg([1-9][0-9]*)", text)
        if not match:
            raise ProbekitError(
                f"unknown pooling {text!r}: use gap, avgK (for example avg2), spatialS (for example spatial8) "
                "or cls (vision encoders)"
            )
        return cls(int(match.group(1)))

    def width(self, channels: int, *, spatial: bool) -> int:
        """Length of the pooled vector for a layer with ``channels`` channels."""
        return channels * self.k * self.k if spatial else channels

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        """Pooled (B, width) float32 vectors of one layer's activation (any float dtype)."""
        if self.cls:  # vision encoders pick their class token themselves, before this is reached
            raise ProbekitError("cls pooling needs a class token: only hf-vision: models have one; use gap or avgK")
        # An explicit cast is not overridden by autocast, and mean / adaptive pooling of a float32
        # tensor stay float32 under it (a no-op for float32 activations).
        activation = activation.float()
        if activation.dim() == 2:
            if self.spatial:
                raise ProbekitError(
                    f"{self.name} pooling needs spatial layers, got a vector of width {activation.shape[1]}: "
                    "select spatial --layers or use gap"
                )
            return activation
        if activation.dim() == 3:  # (B, N, C) tokens
            if self.k == 1:
                return activation.mean(dim=1)
            side = math.isqrt(activation.shape[1])
            if side * side != activation.shape[1]:
                raise ProbekitError(
                    f"{self.name} pooling needs a square token grid, got {activation.shape[1]} tokens: use gap"
                )
            activation = activation.transpose(1, 2).reshape(activation.shape[0], -1, side, side)
        if activation.dim() != 4:
            raise ProbekitError(f"cannot pool an activation of shape {tuple(activation.shape)}")
        if self.k == 1 and not self.spatial:
            return activation.mean(dim=(2, 3))
        return F.adaptive_avg_pool2d(activation, self.k).flatten(1)
