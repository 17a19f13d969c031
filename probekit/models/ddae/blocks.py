"""Building blocks of DDAE's UNet, laid out so that parameter names match its checkpoints.

Attribute names (``norm1``, ``conv2.1``, ``time_emb.1``, ``projection``, ``op``, ...) are fixed by
the state dicts DDAE's training script saves; the computations follow its network definitions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from probekit.models.ddae.config import NORM_GROUPS


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, channels)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise input, then a two-layer MLP.

    ``t`` is what the network is fed: ``t / n_T`` for DDPM, ``log(sigma) / 4`` for EDM.
    """

    def __init__(self, channels: int, augment_dim: int = 0) -> None:
        super().__init__()
        self.channels = channels  # 4 * n_channels; the sinusoid itself has channels // 4 entries
        # kept for strict loading only: augmentation labels are never given when probing
        self.aug_emb = nn.Linear(augment_dim, channels // 4, bias=False) if augment_dim > 0 else None
        self.lin1 = nn.Linear(channels // 4, channels)
        self.lin2 = nn.Linear(channels, channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 8
        step = math.log(10_000) / (half - 1)
        freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -step)
        angles = t.float()[:, None] * freqs[None, :]
        embedding = torch.cat((angles.sin(), angles.cos()), dim=1)
        return self.lin2(F.silu(self.lin1(embedding)))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, time embedding added in between, 1x1 shortcut when widths differ.

    ``resample`` is ``"down"`` (2x2 average pool) or ``"up"`` (2x nearest) for the BigGAN-style
    blocks: both the residual path (after the first activation) and the shortcut are resampled.
    """

    def __init__(
        self, in_channels: int, out_channels: int, time_channels: int, dropout: float, resample: str | None = None
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.time_emb = nn.Sequential(nn.SiLU(), nn.Linear(time_channels, out_channels))

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self._resample(F.silu(self.norm1(x))))
        h = h + self.time_emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.shortcut(self._resample(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions with a residual connection.

    The fused projection yields, per head, ``[q | k | v]`` of ``head_channels`` each (the order the
    checkpoints were trained with); one head spans every channel when ``head_channels`` is None.
    """

    def __init__(self, channels: int, head_channels: int | None) -> None:
        super().__init__()
        self.head_channels = head_channels or channels
        self.heads = channels // self.head_channels
        inner = self.heads * self.head_channels
        self.norm = _norm(channels)
        self.projection = nn.Linear(channels, 3 * inner)
        self.output = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.projection(tokens).view(batch, height * width, self.heads, 3 * self.head_channels)
        q, k, v = (part.transpose(1, 2) for part in qkv.chunk(3, dim=-1))  # (B, heads, HW, d) each
        attended = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        attended = attended.transpose(1, 2).reshape(batch, height * width, self.heads * self.head_channels)
        out = self.output(attended).transpose(1, 2).reshape(batch, channels, height, width)
        return out + x


class ResAttnBlock(nn.Module):
    """A residual block, followed by self-attention at resolutions flagged in ``is_attn``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_channels: int,
        attention: bool,
        head_channels: int | None,
        dropout: float,
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, time_channels, dropout)
        self.attn = SelfAttention(out_channels, head_channels) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class MiddleBlock(nn.Module):
    """Residual block, self-attention, residual block at the lowest resolution."""

    def __init__(self, channels: int, time_channels: int, head_channels: int | None, dropout: float) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, channels, time_channels, dropout)
        self.attn = SelfAttention(channels, head_channels)
        self.res2 = ResBlock(channels, channels, time_channels, dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x, emb)), emb)


class ConvDownsample(nn.Module):
    """Stride-2 3x3 convolution (the plain UNet's downsampler)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class ConvUpsample(nn.Module):
    """2x nearest upsampling then a 3x3 convolution (the plain UNet's upsampler)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResResample(nn.Module):
    """A residual block that halves (``"down"``) or doubles (``"up"``) the resolution (DDPM++)."""

    def __init__(self, channels: int, time_channels: int, dropout: float, direction: str) -> None:
        super().__init__()
        self.op = ResBlock(channels, channels, time_channels, dropout, resample=direction)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.op(x, emb)
