"""Hand-written recomputations of activation kinds from a module's own sub-modules (test helper)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v on (B, heads, N, d) tensors, written out (no fused kernel)."""
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return merge_heads(attend(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)))


def gap(x: torch.Tensor) -> torch.Tensor:
    """Global average of a (B, C, H, W) map, a (B, N, C) token sequence, or a (B, C) vector as is."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.mean(dim=1)
    return x


def grid2(tokens: torch.Tensor) -> torch.Tensor:
    """2 x 2 average of a square token grid (row-major tokens), flattened channel-major."""
    batch, count, channels = tokens.shape
    side = math.isqrt(count)
    grid = tokens.transpose(1, 2).reshape(batch, channels, side, side)
    return F.adaptive_avg_pool2d(grid, 2).flatten(1)


@contextmanager
def inputs_of(*modules: torch.nn.Module):
    """Record each module's (args, kwargs) on its calls during the block: ``calls[i]`` for ``modules[i]``
    (copies: the network may change an input in place later).
    """
    calls: list[list[tuple[tuple, dict]]] = [[] for _ in modules]

    def copy(value: object) -> object:  # the network may later change an input in place
        return value.clone() if isinstance(value, torch.Tensor) else value

    handles = [
        module.register_forward_pre_hook(
            lambda _m, args, kwargs, i=i: calls[i].append(
                (tuple(copy(a) for a in args), {key: copy(value) for key, value in kwargs.items()})
            ),
            with_kwargs=True,
        )
        for i, module in enumerate(modules)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
