"""Original DiT state dict -> diffusers ``DiTTransformer2DModel`` state dict and config.

The two layouts hold the same network. Differences that the mapping bridges:

* the timestep MLP and label table are shared in DiT (``t_embedder``, ``y_embedder``) but copied
  into every block in diffusers (``transformer_blocks.i.norm1.emb``);
* DiT's fused ``attn.qkv`` projection is split into ``to_q``, ``to_k``, ``to_v`` (rows in that order);
* DiT's fixed sin-cos ``pos_embed`` is a non-persistent buffer in diffusers, so it is returned
  separately and copied into the module by the loader.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from probekit.core.errors import ProbekitError
from probekit.models.dit.configs import OriginalShape

_BLOCK_PARTS = ("adaLN_modulation.1", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
_SHARED = (
    "x_embedder.proj",
    "t_embedder.mlp.0",
    "t_embedder.mlp.2",
    "final_layer.adaLN_modulation.1",
    "final_layer.linear",
)


def original_keys(depth: int) -> list[str]:
    """Every key of an original DiT state dict with ``depth`` blocks (learned or not, any width)."""
    keys = ["pos_embed", "y_embedder.embedding_table.weight"]
    for prefix in _SHARED:
        keys += [f"{prefix}.weight", f"{prefix}.bias"]
    for i in range(depth):
        for part in _BLOCK_PARTS:
            keys += [f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"]
    return keys


def few_keys(keys: set[str]) -> str:
    """Up to three names, sorted, and how many more there are."""
    ordered = sorted(keys)
    return ", ".join(ordered[:3]) + (f" (+{len(ordered) - 3} more)" if len(ordered) > 3 else "")


def check_original_keys(state: Mapping[str, torch.Tensor], depth: int) -> None:
    """Strict key check: raises a one-line :class:`ProbekitError` on any missing or unexpected key."""
    expected, found = set(original_keys(depth)), set(state)
    missing, unexpected = expected - found, found - expected
    if missing or unexpected:
        parts = ([f"missing {few_keys(missing)}"] if missing else []) + (
            [f"unexpected {few_keys(unexpected)}"] if unexpected else []
        )
        raise ProbekitError(
            f"not an original DiT-{depth}-block state dict ({'; '.join(parts)}): give the model's "
            "own weights (the 'ema' entry of a DiT training checkpoint) or a diffusers DiT folder"
        )


def diffusers_config(shape: OriginalShape, heads: int) -> dict[str, object]:
    """``DiTTransformer2DModel`` keyword arguments for an original DiT of this shape."""
    if shape.hidden % heads:
        raise ProbekitError(
            f"hidden size {shape.hidden} is not divisible by heads={heads}: give the model's real head count"
        )
    if shape.mlp_hidden != 4 * shape.hidden:
        raise ProbekitError(
            f"the MLP is {shape.mlp_hidden} wide, not 4 x {shape.hidden}: probekit reads DiTs with mlp_ratio 4 only"
        )
    return {
        "num_attention_heads": heads,
        "attention_head_dim": shape.hidden // heads,
        "in_channels": shape.in_channels,
        "out_channels": shape.out_channels,
        "num_layers": shape.depth,
        "sample_size": shape.latent_size,
        "patch_size": shape.patch,
        "num_embeds_ada_norm": shape.num_classes,
        # DiT's LayerNorms all use eps 1e-6; diffusers' default for the MLP norm is 1e-5.
        "norm_eps": 1e-6,
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
    }


def original_to_diffusers(
    state: Mapping[str, torch.Tensor], depth: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(diffusers state dict, pos_embed (1, N, D)) for a key-checked original DiT state dict."""
    check_original_keys(state, depth)
    out: dict[str, torch.Tensor] = {}

    def both(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = state[f"{src}.weight"]
        out[f"{dst}.bias"] = state[f"{src}.bias"]

    both("x_embedder.proj", "pos_embed.proj")
    both("final_layer.adaLN_modulation.1", "proj_out_1")
    both("final_layer.linear", "proj_out_2")
    for i in range(depth):
        block = f"transformer_blocks.{i}"
        # diffusers gives every block its own copy of the shared conditioning embedders.
        both("t_embedder.mlp.0", f"{block}.norm1.emb.timestep_embedder.linear_1")
        both("t_embedder.mlp.2", f"{block}.norm1.emb.timestep_embedder.linear_2")
        out[f"{block}.norm1.emb.class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
        both(f"blocks.{i}.adaLN_modulation.1", f"{block}.norm1.linear")
        for kind in ("weight", "bias"):
            q, k, v = state[f"blocks.{i}.attn.qkv.{kind}"].chunk(3, dim=0)
            out[f"{block}.attn1.to_q.{kind}"] = q
            out[f"{block}.attn1.to_k.{kind}"] = k
            out[f"{block}.attn1.to_v.{kind}"] = v
        both(f"blocks.{i}.attn.proj", f"{block}.attn1.to_out.0")
        both(f"blocks.{i}.mlp.fc1", f"{block}.ff.net.0.proj")
        both(f"blocks.{i}.mlp.fc2", f"{block}.ff.net.2")
    return out, state["pos_embed"]
