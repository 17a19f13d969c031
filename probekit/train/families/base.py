"""What a model family contributes to the one training loop.

The loop (:mod:`probekit.train.loop`) owns the data order, augmentation, optimiser, EMA,
checkpointing and exact resume; a family only says how to build its network, how the noise of one
step is drawn and turned into a loss, how to sample from it, and how to save it in the layout
that ``probekit.models`` loads (the layout downloaded checkpoints of that family have).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from probekit.train.config import TrainConfig


class TrainFamily(ABC):
    """One family: a network, its noising and training target, its sampler and its file layout."""

    #: the value of the recipe's ``family`` setting
    name: str
    #: one line for the model card: what the network predicts and how the noise is drawn
    objective: str

    @abstractmethod
    def build(self, config: TrainConfig) -> nn.Module:
        """The freshly initialised network (the caller seeds torch)."""

    @abstractmethod
    def image_shape(self, config: TrainConfig) -> tuple[int, int]:
        """(side, channels) that training images are fitted to."""

    @abstractmethod
    def draw(self, config: TrainConfig, generator: torch.Generator, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """This step's noise levels and noise, drawn from ``generator`` only (exact resume)."""

    @abstractmethod
    def loss(self, model: nn.Module, x0: torch.Tensor, draws: dict[str, torch.Tensor], config: TrainConfig,
             autocast: torch.autocast) -> torch.Tensor:  # fmt: skip
        """The scalar training loss of clean images ``x0`` (in [-1, 1]) under ``draws``."""

    @abstractmethod
    def sample(self, model: nn.Module, noise: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        """Deterministic samples in [-1, 1] from the standard normal ``noise`` (``config.sample_steps`` steps)."""

    @abstractmethod
    def save(self, ema: nn.Module, model: nn.Module, config: TrainConfig, folder: Path, step: int) -> None:
        """Write ``folder`` (which does not exist yet) in the family's public checkpoint layout."""

    @abstractmethod
    def load_weights(self, model: nn.Module, folder: Path) -> None:
        """Load the weights of a folder written by :meth:`save` or :meth:`export` into ``model``
        (any float dtype, cast to the model's; a mismatching architecture is an error).
        """

    @abstractmethod
    def model_spec(self, folder: Path, config: TrainConfig) -> str:
        """The ``--model`` string that loads a folder written by :meth:`save`."""

    @abstractmethod
    def export(self, source: Path, dest: Path, dtype: torch.dtype | None) -> list[str]:
        """Copy a saved folder to ``dest`` (weights cast to ``dtype`` unless None); returns the files written."""

    @abstractmethod
    def describe_network(self, config: TrainConfig) -> str:
        """The architecture in one line, for the model card."""
