"""DiT: a patch transformer predicting the noise (epsilon) on the discrete DDPM schedule.

The network receives the DDPM step index 0..T-1 as DiT's own code does; the checkpoint is an
original DiT state dict (``dit:...pt``, see :mod:`.transformer`), loaded by ``probekit.models.dit``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probekit.train.families.base import TrainFamily
from probekit.train.families.discrete import DiscreteEpsilon
from probekit.train.families.transformer import TransformerFiles


class DiTFamily(TransformerFiles, DiscreteEpsilon, TrainFamily):
    name = "dit"
    checkpoint = "dit.pt"
    prefix = "dit:"

    def predict(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t.float())

    def loss(self, model, x0, draws, config, autocast) -> torch.Tensor:
        x_t, noise = self.noised(x0, draws, config)
        with autocast:
            prediction = self.predict(model, x_t, draws["timesteps"])
        return F.mse_loss(prediction.float(), noise)
