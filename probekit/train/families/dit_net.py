"""A DiT (Peebles & Xie 2023) with the original repository's parameter names, for training.

Names and shapes are those of an original DiT state dict (``x_embedder.proj``, ``t_embedder.mlp``,
``y_embedder.embedding_table``, ``blocks.i.{adaLN_modulation.1, attn.qkv, attn.proj, mlp.fc1,
mlp.fc2}``, ``final_layer.{adaLN_modulation.1, linear}``, ``pos_embed``), so ``state_dict()`` is
a checkpoint that ``probekit.models.dit`` reads exactly as it reads a downloaded DiT or SiT.
The timestep embedding and the label table are shared by all blocks, as in DiT (diffusers gives
every block its own copy, which would train apart and could not be saved in DiT's layout).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: width of DiT's sinusoidal timestep features
FREQUENCY_DIM = 256


def sincos_2d(hidden: int, side: int) -> torch.Tensor:
    """DiT's fixed 2-D sin-cos position table, (1, side * side, hidden): half the channels encode the
    column, half the row, each as [sin, cos] of ``pos * 10000^(-2i / (hidden / 2))``.
    """
    if hidden % 4:
        raise ValueError(f"hidden size {hidden} must be divisible by 4 for 2-D sin-cos positions")
    quarter = hidden // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64), indexing="ij")

    def encode(pos: np.ndarray) -> np.ndarray:
        angles = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    # DiT's grid puts the column coordinate first (its meshgrid(w, h) then stack)
    table = np.concatenate([encode(cols), encode(rows)], axis=1)
    return torch.from_numpy(table).float()[None]


def timestep_features(t: torch.Tensor, dim: int = FREQUENCY_DIM) -> torch.Tensor:
    """[cos, sin] of ``t * exp(-ln(10^4) i / (dim / 2))``: DiT's TimestepEmbedder input (t used as given)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class _TimeEmbedder(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t))


class _LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)  # the last row is the null class


class _PatchEmbed(nn.Module):
    def __init__(self, channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, hidden, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = _Mlp(hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(_modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))


class _FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class DiTNet(nn.Module):
    """Class-conditional DiT on (B, channels, size, size) inputs; training here always passes the
    null class, so the network is unconditional. ``forward(x, t)`` takes ``t`` exactly as the
    family's loader feeds it (DDPM index 0..999 for DiT, SiT's time in [0, 1] for flow matching).
    """

    def __init__(
        self, *, input_size: int, in_channels: int, patch_size: int, hidden_size: int, depth: int, num_heads: int,
        num_classes: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.in_channels, self.patch, self.num_classes = in_channels, patch_size, num_classes
        self.side = input_size // patch_size
        self.x_embedder = _PatchEmbed(in_channels, hidden_size, patch_size)
        self.t_embedder = _TimeEmbedder(hidden_size)
        self.y_embedder = _LabelEmbedder(num_classes, hidden_size)
        # Fixed, but a parameter (without gradient) as in DiT, so it is part of the state dict.
        self.pos_embed = nn.Parameter(sincos_2d(hidden_size, self.side), requires_grad=False)
        self.blocks = nn.ModuleList(_Block(hidden_size, num_heads) for _ in range(depth))
        self.final_layer = _FinalLayer(hidden_size, patch_size, in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT's initialisation: xavier linears, zeroed adaLN and output layers (each block starts
        # as the identity), normal(0.02) for the embedders.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        # the modules by type: mypy cannot see through nn.Sequential indexing
        timestep_layers = [m for m in self.t_embedder.mlp if isinstance(m, nn.Linear)]
        zeroed = [m for block in self.blocks for m in block.adaLN_modulation if isinstance(m, nn.Linear)]
        zeroed += [m for m in self.final_layer.adaLN_modulation if isinstance(m, nn.Linear)]
        zeroed.append(self.final_layer.linear)
        for layer in timestep_layers:
            nn.init.normal_(layer.weight, std=0.02)
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tokens = self.x_embedder(x) + self.pos_embed
        null = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        c = self.t_embedder(t) + self.y_embedder.embedding_table(null)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self._unpatchify(self.final_layer(tokens, c))

    def _unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p, s, c = tokens.shape[0], self.patch, self.side, self.in_channels
        x = tokens.reshape(b, s, s, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, s * p, s * p)
