"""What a probe run does: the probes, the features they fit on, the validation split, and every
probe's settings (:class:`ProbeRunConfig`, read by :mod:`probekit.probes.run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from probekit.core.errors import ConfigError
from probekit.probes.registry import ProbeSettings


@dataclass
class ProbeRunConfig:
    """Which probes to run, on which features, and the validation split every choice is made on.

    Attributes:
        probes: names from :data:`probekit.probes.PROBES`.
        val_fraction: share of train held out (class-stratified, seeded) as the validation
            split; a cache with its own "val" split uses that instead. 0 chooses on test.
        train_features: "mean" (one vector per image: the mean over the clean image's noise
            draws) or "sample" (epoch-based probes draw one (view, draw) slot per image per
            epoch; the others train on every slot as a row).
        test_features: "mean" over the noise draws of the clean image, or "single" (draw 0),
            for val and test alike.
        use_views: sample from the first ``use_views`` augmented views only (None: all); views
            are keyed by their number, so the first A views of a cache with more views are the
            views a cache extracted with ``--views A`` holds.
        settings: every probe's own settings (see :class:`ProbeSettings`), the one place
            probes read them from.
        epochs, lr, weight_decay, batch_size: shorthands for the epoch-based probes (sgd, mlp):
            folded into ``settings`` at construction, then None.
        device: where probes run.
        seed: seed of the validation split and of the probes.
        timesteps: probe only the cells at these timesteps of the cache's grid (None: every cell).
        drop_massive: drop each cell's massive channels (:mod:`probekit.features.massive`) before
            probing; the results table then has a ``massive_dropped`` column (channels dropped per cell).
    """

    probes: Sequence[str] = field(default=("linear", "knn"))
    val_fraction: float = 0.1
    train_features: str = "mean"
    test_features: str = "mean"
    use_views: int | None = None
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    device: str = "cpu"
    seed: int = 0
    timesteps: Sequence[int] | None = None
    drop_massive: bool = False

    def __post_init__(self) -> None:
        if self.train_features not in ("mean", "sample"):
            raise ConfigError("train_features", f"{{field}} {self.train_features!r}: use mean or sample")
        if self.test_features not in ("mean", "single"):
            raise ConfigError("test_features", f"{{field}} {self.test_features!r}: use mean or single")
        # ``settings`` is the one home of every probe setting: the epoch-based overrides given
        # here are folded into its sgd and mlp recipes (with the run's seed) and cleared.
        overrides = {
            k: v
            for k, v in (
                ("epochs", self.epochs),
                ("lr", self.lr),
                ("weight_decay", self.weight_decay),
                ("batch_size", self.batch_size),
            )
            if v is not None
        }
        s = self.settings
        self.settings = replace(
            s, sgd=replace(s.sgd, seed=self.seed, **overrides), mlp=replace(s.mlp, seed=self.seed, **overrides)
        )
        self.epochs = self.lr = self.weight_decay = self.batch_size = None
