"""The ``pixels`` baseline: the input image itself, flattened, as a one-layer Backbone."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.core.schedule import CleanSchedule, NoiseSchedule
from probekit.core.types import GridPoint, LayerInfo
from probekit.models.backbone import Backbone


class PixelsBackbone(Backbone):
    """Raw pixels in [0, 1] at the data's native size; pooling does not apply (the vector is the image),
    except ``spatialS``, which averages the image to an S x S map like any other layer.
    """

    framework = "pixels"
    model_id = "pixels"
    input_size = None
    input_channels = None
    value_range = (0.0, 1.0)

    def __init__(self, schedule: NoiseSchedule | None = None) -> None:
        self.schedule = schedule or CleanSchedule()

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo(name="pixels", stage="input", depth=0, channels=0, resolution="native")]

    def features(
        self,
        x_noisy: torch.Tensor,
        point: GridPoint,
        layers: Sequence[str],
        pooling: Pooling,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if list(layers) != ["pixels"]:
            raise ProbekitError(f"the pixels model has one layer, 'pixels'; got {list(layers)}")
        if pooling.spatial:  # spatialS: the image averaged to an S x S map, as the dense analyses read it
            return {"pixels": pooling(x_noisy)}
        return {"pixels": x_noisy.flatten(1)}

    def forward(self, x_noisy: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        return x_noisy

    def weights_sha256(self) -> str:
        return hashlib.sha256(b"pixels").hexdigest()
