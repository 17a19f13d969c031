"""What the DiT and the flow-matching (SiT) transformer share: the network and its file layout.

Both are saved as an original DiT / SiT checkpoint: one ``.pt`` holding the EMA state dict under
DiT's own parameter names (the form of the published ``DiT-XL-2-256x256.pt`` and
``SiT-XL-2-256x256.pt``). They run on pixels, not VAE latents, so the ``--model`` spec says
``vae=none``; ``heads=N`` is needed because sizes outside DiT's published table do not reveal
their head count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.train.families.dit_net import DiTNet

if TYPE_CHECKING:
    from probekit.train.config import TrainConfig

#: the network settings a transformer recipe must give (``network:`` in the YAML)
NETWORK_KEYS = ("input_size", "in_channels", "patch_size", "hidden_size", "depth", "num_heads")


def build_transformer(config: TrainConfig) -> DiTNet:
    network: dict[str, Any] = dict(config.network or {})
    missing = [key for key in NETWORK_KEYS if key not in network]
    unknown = sorted(set(network) - set(NETWORK_KEYS))
    if missing or unknown:
        raise ProbekitError(
            f"the {config.family} recipe's `network` needs exactly {', '.join(NETWORK_KEYS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    try:
        return DiTNet(**{key: int(network[key]) for key in NETWORK_KEYS})
    except ValueError as err:
        raise ProbekitError(f"cannot build the {config.family} transformer: {err}") from err


class TransformerFiles:
    """Save, export and name an original-layout DiT/SiT checkpoint ``<folder>/<checkpoint>``."""

    #: file name of the checkpoint inside a saved folder
    checkpoint: str
    #: the loader's prefix: ``dit:`` or ``sit:``
    prefix: str

    def build(self, config: TrainConfig) -> nn.Module:
        return build_transformer(config)

    def image_shape(self, config: TrainConfig) -> tuple[int, int]:
        network = config.network or {}
        return int(network.get("input_size", 32)), int(network.get("in_channels", 1))

    def save(self, ema: nn.Module, model: nn.Module, config: TrainConfig, folder: Path, step: int) -> None:
        folder.mkdir(parents=True)
        torch.save({k: v.detach().clone() for k, v in ema.state_dict().items()}, folder / self.checkpoint)

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        state = torch.load(folder / self.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() for k, v in state.items()})

    def model_spec(self, folder: Path, config: TrainConfig) -> str:
        heads = int((config.network or {})["num_heads"])
        return f"{self.prefix}{folder / self.checkpoint}?heads={heads}&vae=none"

    def export(self, source: Path, dest: Path, dtype: torch.dtype | None) -> list[str]:
        dest.mkdir(parents=True, exist_ok=True)
        state = torch.load(source / self.checkpoint, map_location="cpu", weights_only=True)
        if dtype is not None:  # the loader casts back to float32 (values rounded to `dtype`)
            state = {k: v.to(dtype) for k, v in state.items()}
        torch.save(state, dest / self.checkpoint)
        return [self.checkpoint]

    def describe_network(self, config: TrainConfig) -> str:
        n = config.network or {}
        side = n.get("input_size")
        tokens = (int(side) // int(n.get("patch_size", 1))) ** 2
        return (
            f"DiT on pixels, {n.get('depth')} blocks x {n.get('hidden_size')} wide, {n.get('num_heads')} heads, "
            f"patch {n.get('patch_size')} ({tokens} tokens), {side}x{side}x{n.get('in_channels')}, "
            "unconditional (null class)"
        )
