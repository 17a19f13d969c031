"""Small shared records (a readable layer, a noise-grid point). No torch: cache, results and plots
use them without loading a deep-learning framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer. ``depth`` is its position in forward order (0 = first to finish)."""

    name: str
    stage: str  # "down" | "mid" | "up" | "block" | "input"
    depth: int
    channels: int
    resolution: str  # "HxW" of the activation, or "N tokens"
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class GridPoint:
    """One noise level. ``t`` is the framework's index; the other fields are derived from it."""

    t: int
    model_input: float
    alpha_bar: float
    sigma: float
    logsnr: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class CellInfo:
    """Metadata of one (timestep, layer) cell of a results table: ``t`` the framework's timestep index,
    ``sigma`` and ``logsnr`` of that noise level (sigma 0 / logsnr +inf: the clean input), ``alpha_bar``
    the signal fraction, and the layer's name, stage and depth (forward order).
    """

    t: int
    sigma: float
    logsnr: float
    alpha_bar: float
    layer: str
    stage: str
    depth: int
