"""The published DiT sizes and what an original DiT state dict says about its own shape.

Sizes are those of Peebles & Xie's DiT (github.com/facebookresearch/DiT, ``models.py``):
XL = 28 blocks x 1152 wide x 16 heads, L = 24 x 1024 x 16, B = 12 x 768 x 12, S = 12 x 384 x 6,
each with patch size 2, 4 or 8 (``DiT-XL/2`` ... ``DiT-S/8``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from probekit.core.errors import ProbekitError

#: (depth, hidden size, attention heads) of each published DiT width
_SIZES: dict[str, tuple[int, int, int]] = {
    "XL": (28, 1152, 16),
    "L": (24, 1024, 16),
    "B": (12, 768, 12),
    "S": (12, 384, 6),
}


@dataclass(frozen=True)
class DiTSize:
    """A DiT architecture: ``depth`` blocks of width ``hidden`` with ``heads`` heads, ``patch`` x ``patch`` latent
    patches.
    """

    name: str
    depth: int
    hidden: int
    patch: int
    heads: int


DIT_CONFIGS: dict[str, DiTSize] = {
    f"DiT-{width}/{patch}": DiTSize(f"DiT-{width}/{patch}", depth, hidden, patch, heads)
    for width, (depth, hidden, heads) in _SIZES.items()
    for patch in (2, 4, 8)
}


def parse_config_name(text: str) -> DiTSize:
    """``DiT-XL/2``, ``DiT-XL-2``, ``XL/2`` or ``xl-2`` -> the published size (SiT-XL/2 etc. name the same sizes)."""
    match = re.fullmatch(r"(?:[ds]it[-_])?(xl|l|b|s)[-/_](2|4|8)", text.strip(), flags=re.IGNORECASE)
    if not match:
        known = ", ".join(DIT_CONFIGS)
        raise ProbekitError(f"unknown DiT config {text!r}: use one of {known}")
    return DIT_CONFIGS[f"DiT-{match.group(1).upper()}/{match.group(2)}"]


@dataclass(frozen=True)
class OriginalShape:
    """What the tensor shapes of an original DiT state dict fix (everything but the head count).

    ``latent_size`` is the side of the latent the network was built for, in latent pixels;
    ``num_classes`` excludes the null class (the last row of the label table).
    """

    depth: int
    hidden: int
    patch: int
    in_channels: int
    out_channels: int
    num_classes: int
    latent_size: int
    mlp_hidden: int

    @property
    def tokens(self) -> int:
        return (self.latent_size // self.patch) ** 2

    def describe(self) -> str:
        return f"depth {self.depth}, hidden {self.hidden}, patch {self.patch}"

    def known_size(self) -> DiTSize | None:
        """The published size with this depth, width and patch, if there is one."""
        for size in DIT_CONFIGS.values():
            if (size.depth, size.hidden, size.patch) == (self.depth, self.hidden, self.patch):
                return size
        return None


def _tensor(state: Mapping[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
    tensor = state.get(key)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != ndim:
        raise ProbekitError(
            f"{key!r} is missing or not a {ndim}-d tensor: this is not an original DiT state dict "
            "(github.com/facebookresearch/DiT); give a DiT .pt or a diffusers DiT folder"
        )
    return tensor


def infer_original_shape(state: Mapping[str, torch.Tensor]) -> OriginalShape:
    """Read depth, width, patch, channels, classes and latent size off the tensor shapes."""
    hidden, in_channels, patch, _ = _tensor(state, "x_embedder.proj.weight", 4).shape
    block_ids = {int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))}
    if not block_ids:
        raise ProbekitError("the state dict has no 'blocks.N.*' keys: this is not an original DiT state dict")
    tokens = _tensor(state, "pos_embed", 3).shape[1]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ProbekitError(f"pos_embed holds {tokens} tokens, not a square grid: this is not a DiT state dict")
    label_rows = _tensor(state, "y_embedder.embedding_table.weight", 2).shape[0]
    out_features = _tensor(state, "final_layer.linear.weight", 2).shape[0]
    mlp_hidden = _tensor(state, "blocks.0.mlp.fc1.weight", 2).shape[0]
    return OriginalShape(
        depth=max(block_ids) + 1,
        hidden=int(hidden),
        patch=int(patch),
        in_channels=int(in_channels),
        out_channels=int(out_features) // (int(patch) ** 2),
        # DiT trains with label dropout, which adds one row to the table: the null class.
        num_classes=int(label_rows) - 1,
        latent_size=side * int(patch),
        mlp_hidden=int(mlp_hidden),
    )
