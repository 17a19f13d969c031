"""t-SNE of one cell of a cache: by default the val-chosen linear-probe cell.

Orchestration over the cache, the probes and the plots, kept out of all three so that probes
never import plots.
"""

from __future__ import annotations

from pathlib import Path

from probekit.core.errors import ProbekitError
from probekit.evaluate.results import best_cell, read_table
from probekit.features.cache import FeatureCache
from probekit.plots import plot_tsne
from probekit.probes.run import ProbeRunConfig, run_probes


def tsne_of_cell(
    cache_path: str | Path,
    out: str | Path,
    *,
    t: int | None = None,
    layer: str | None = None,
    results: str | Path | None = None,
    split: str = "test",
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """t-SNE scatter of one cell; the cell defaults to the best linear-probe cell.

    The best cell is the val-chosen linear cell of ``results`` when given, otherwise of a linear
    probe run on the cache.
    """
    if t is None or layer is None:
        with FeatureCache(cache_path) as cache:
            model = str(cache.attrs.get("model_id"))
        table = (
            read_table(results)
            if results
            else run_probes(cache_path, ProbeRunConfig(probes=("linear",)), progress=False)
        )
        best_t, best_layer = best_cell(
            table, probe="linear", model=model, source=str(results or "the linear probe run")
        )
        t = best_t if t is None else t
        layer = best_layer if layer is None else layer
    with FeatureCache(cache_path) as cache:
        cache.require_complete()
        if split not in cache.splits:
            raise ProbekitError(f"{cache_path} has no split {split!r}; it has {', '.join(cache.splits)}")
        features = cache.features(split, layer, t)
        labels = cache.labels(split)
        point = next(p for p in cache.grid if p.t == t)
        title = (
            f"{cache.attrs.get('model_id')} | {cache.attrs.get('dataset')} {split}\nt={t} "
            f"(sigma={point.sigma:.3g})  {layer}"
        )
        class_names = cache.class_names
    return plot_tsne(features, labels, class_names, out, title=title, max_points=max_points, seed=seed)
