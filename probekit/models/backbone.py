"""The Backbone contract: a network, its noise schedule, and a registry of layers to read out.

``features(x_noisy, point, layers, pooling)`` runs one forward pass and returns the pooled
activation of every requested layer. Hooks live only inside that call (removed in ``finally``)
and the forward stops right after the deepest requested layer has produced its output.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..pooling import Pooling
from ..schedule import GridPoint, NoiseSchedule


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer. ``depth`` is its position in forward order (0 = first to finish)."""

    name: str
    stage: str  # "down" | "mid" | "up" | "block" | "input"
    depth: int
    channels: int
    resolution: str  # "HxW" of the activation, or "N tokens"
    aliases: tuple[str, ...] = field(default=())


class Backbone(ABC):
    """A diffusion network (or a baseline) seen as a feature extractor over a noise grid."""

    model_id: str
    framework: str
    schedule: NoiseSchedule
    #: the (H, W) the network expects, or None to keep the data's own size
    input_size: tuple[int, int] | None
    #: the channel count the network expects, or None to keep the data's own
    input_channels: int | None
    #: the pixel range the network was trained on, e.g. (-1.0, 1.0)
    value_range: tuple[float, float]

    @abstractmethod
    def layers(self) -> list[LayerInfo]:
        """Every readable layer, in forward order."""

    def default_layers(self) -> list[str]:
        return [layer.name for layer in self.layers()]

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean inputs -> the space the diffusion runs in (identity for pixel-space models).

        Latent models (DiT + VAE) encode here. Extraction calls it once per batch of clean
        images and reuses the result for every grid point and noise draw, so an expensive encoder
        runs once per image, not once per (image, t).
        """
        return x0

    @abstractmethod
    def features(
        self, x_noisy: torch.Tensor, point: GridPoint, layers: Sequence[str], pooling: Pooling
    ) -> dict[str, torch.Tensor]:
        """``{layer: (B, D) pooled features}`` from one forward of ``x_noisy`` at ``point``."""

    @abstractmethod
    def forward(self, x_noisy: torch.Tensor, point: GridPoint) -> torch.Tensor:
        """The bare network forward, no hooks (the baseline of the extraction benchmark)."""

    @abstractmethod
    def weights_sha256(self) -> str:
        """Hash identifying the weights (see :func:`state_dict_sha256`)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def speed_up(self, *, channels_last: bool = False, compile: bool = False) -> list[str]:
        """Optional speed-ups of the wrapped network (``self.net``); returns what was applied.

        ``channels_last`` converts the weights (extraction converts inputs to match).
        ``compile`` runs ``torch.compile`` on the readable layers that contain no other readable
        layer: hooks sit on module calls outside the compiled code, so capture and early stop
        keep working, at the price of graph breaks between those layers.
        """
        net = getattr(self, "net", None)
        if not isinstance(net, nn.Module):
            return []
        applied = []
        if channels_last:
            net.to(memory_format=torch.channels_last)
            applied.append("channels_last")
        if compile:
            names = [layer.name for layer in self.layers()]
            leaves = [name for name in names if not any(other.startswith(name + ".") for other in names)]
            for name in leaves:
                module = net.get_submodule(name)
                module.forward = torch.compile(module.forward, dynamic=False)  # type: ignore[method-assign]
            applied.append(f"torch.compile on {len(leaves)} layers")
        return applied

    def to(self, device: torch.device | str) -> "Backbone":
        return self


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (name, dtype, shape, bytes), in name order.

    Independent of the file format the weights came in, so a safetensors and a .bin copy of the
    same weights, or a random init with the same seed, hash the same.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        # Logical element order, whatever the memory format (channels_last weights hash the same).
        tensor = state[name].detach().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        tensor = tensor.clone(memory_format=torch.contiguous_format).reshape(-1)
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class StopForward(Exception):
    """Raised by the hook of the deepest requested layer to skip the rest of the network."""


def _primary(output: object) -> torch.Tensor:
    # diffusers down blocks return (hidden_states, skip_states); the first entry is the stage output.
    if isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "sample"):
        output = output.sample
    return output  # type: ignore[return-value]


@contextmanager
def capture(
    modules: Mapping[str, nn.Module], pooling: Pooling, stop_after: str | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``modules`` for the duration of the block; pooled outputs land in the yielded dict.

    The hook of ``stop_after`` raises :class:`StopForward` once its output is stored, so the
    caller's forward ends there; the caller catches it. Hooks are removed even on error.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            captured[name] = pooling(_primary(output))
            if name == stop_after:
                raise StopForward

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def run_and_capture(
    run: Callable[[], object], modules: Mapping[str, nn.Module], pooling: Pooling, stop_after: str
) -> dict[str, torch.Tensor]:
    """Call ``run`` (a forward) without gradients, hooking ``modules``; it stops right after ``stop_after``.

    Returns the pooled output of every module by name.
    """
    with torch.no_grad(), capture(modules, pooling, stop_after=stop_after) as captured:
        try:
            run()
        except StopForward:
            pass
    return captured
