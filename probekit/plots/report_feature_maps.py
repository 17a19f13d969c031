"""Feature maps in a segmentation cell's panel: a few test images, their ground-truth masks and the
cell's spatial features shown as colours (PCA to RGB, as the DINOv2 and DIFT papers draw them).

Only the val-chosen cell of each segmentation run carries them, and only when its spatial cache is
given with ``--cache`` and the segmentation folder it was extracted from is readable at the path
the table names. The first three principal components of all the shown images' feature vectors
(one per grid position) become red, green and blue, each scaled to 0-255 over those images.
The predicted segmentation is not drawn: it needs the fitted probe, which is not kept.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.evaluate.results import best_cells
from probekit.plots.report_figures import cell_key
from probekit.plots.report_neighbours import thumbnail
from probekit.plots.report_tables import table_kind


def pca_rgb(maps: np.ndarray) -> np.ndarray:
    """(n, C, S, S) feature maps -> (n, S, S, 3) uint8: the first three principal components of the
    n * S * S feature vectors, each min-max scaled over all of them (signs: largest |loading| positive).
    """
    n, c, s, _ = maps.shape
    vectors = maps.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    vectors -= vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(vectors, full_matrices=False)
    axes = vt[:3]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    components = vectors @ axes.T
    if components.shape[1] < 3:  # fewer than three channels: the missing colours stay 0
        components = np.pad(components, ((0, 0), (0, 3 - components.shape[1])))
    low, high = components.min(axis=0), components.max(axis=0)
    scaled = (components - low) / np.where(high > low, high - low, 1.0)
    return np.round(255 * scaled).astype(np.uint8).reshape(n, s, s, 3)


def mask_png(mask: np.ndarray) -> str:
    """A mask of class ids as a ``data:`` PNG in the PASCAL VOC colours."""
    from PIL import Image

    from probekit.data.segmentation import voc_palette

    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def feature_map_panels(
    tables: dict[Path, pd.DataFrame], caches: Sequence[Path], *, images: int = 4
) -> tuple[dict[str, dict], list[str]]:
    """Per val-chosen segmentation cell (keyed like the cell panels): its images, masks and PCA colours;
    and notes on the runs left without them.
    """
    from probekit.data import load_dataset
    from probekit.data.segmentation import read_masks
    from probekit.features.cache import FeatureCache

    spatial: dict[tuple[str, str], Path] = {}
    for path in caches:
        with FeatureCache(path) as cache:
            if cache.spatial_side and "test" in cache.splits:
                spatial.setdefault((str(cache.attrs.get("model_id")), str(cache.attrs.get("dataset"))), path)
    out: dict[str, dict] = {}
    notes: list[str] = []
    for table in (t for t in tables.values() if table_kind(t) == "segment"):
        for (model, dataset), own in table.groupby(["model", "dataset"], sort=False):
            best = best_cells(own, "miou").iloc[0]
            cache_path = spatial.get((str(model), str(dataset)))
            if cache_path is None:
                notes.append(f"segment {model}: no spatial cache of it given with --cache")
                continue
            try:
                folder = load_dataset(str(dataset), download=False)
                with FeatureCache(cache_path) as cache:
                    ids = cache.index("test")[:images]
                    maps = cache.feature_maps("test", str(best["layer"]), int(best["t"]), np.arange(len(ids)))
                masks = read_masks(str(dataset), "test", ids)
                pictures = folder.splits["test"].read(ids)
            except (ProbekitError, OSError, ValueError) as err:
                notes.append(f"segment {model}: images of {dataset} not readable here ({str(err).splitlines()[0]})")
                continue
            colours = pca_rgb(maps)
            out[cell_key(model, best["probe"], best["t"], best["layer"])] = {
                "rows": [
                    {"id": int(i), "img": thumbnail(p), "mask": mask_png(m), "pca": thumbnail(c)}
                    for i, p, m, c in zip(ids, pictures, masks, colours)
                ]
            }
    return out, notes
