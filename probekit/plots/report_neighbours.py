"""The heavy part of a cell panel, for each probed model's val-chosen cell only: nearest train images
of a few test images, and a 2-D embedding of the test images with a thumbnail on hover.

Both are computed in the cell's own features, read from the cache given with ``--cache`` (the mean
over noise draws of the clean view, as the probes see it): features are centred on the train mean
and compared by cosine similarity; the embedding is their first two principal components (numpy
SVD). Thumbnails are the dataset's images at the cache's sample ids (the dataset named in the cache,
loaded without downloading), as small PNGs.

Size budget (said on the page): only the val-chosen cell of each model's preferred probe carries
images: ``queries`` x (1 + ``k``) neighbour thumbnails and one thumbnail per embedded test image
(at most ``max_points``), each about 0.3-1 kB for 28 x 28 images.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from probekit.core.errors import ProbekitError
from probekit.core.specs import probe_order
from probekit.evaluate.results import best_cells
from probekit.plots.report_figures import cell_key
from probekit.plots.report_tables import table_kind

if TYPE_CHECKING:
    from probekit.data import ImageDataset

# Thumbnails are stored at most this many pixels on a side (the page enlarges them, pixelated).
THUMB_SIDE = 32


def thumbnail(image: np.ndarray) -> str:
    """A uint8 (H, W, C) image as a ``data:image/png;base64,...`` URI, shrunk to THUMB_SIDE at most."""
    from PIL import Image

    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if max(picture.size) > THUMB_SIDE:
        picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def nearest(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``train`` most cosine-similar to each query after centring both on the train mean:
    (q, k) positions (ties: lower position first) and their similarities.
    """
    mean = train.mean(axis=0, dtype=np.float64)
    a = train.astype(np.float64) - mean
    b = queries.astype(np.float64) - mean
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    similarity = b @ a.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def embedding(features: np.ndarray) -> np.ndarray:
    """(n, 2) first two principal components of ``features`` (signs fixed: largest |loading| positive)."""
    centred = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    return centred @ axes.T


def _images(dataset: ImageDataset, split: str, ids: np.ndarray) -> np.ndarray:
    part = dataset.splits[split]
    order = np.argsort(part.index, kind="stable")
    found = np.searchsorted(part.index, ids, sorter=order)
    positions = order[np.minimum(found, len(order) - 1)]
    if not np.array_equal(part.index[positions], ids):
        raise ProbekitError(f"the dataset's {split} split does not hold every sample id of the cache")
    return part.read(positions)


def neighbour_panels(
    tables: dict[Path, pd.DataFrame],
    caches: Sequence[Path],
    *,
    queries: int = 6,
    k: int = 5,
    max_points: int = 500,
) -> tuple[dict[str, dict], list[str]]:
    """Per val-chosen cell (keyed like the cell panels) its neighbours and embedding; and notes on the
    models left without them (no cache of theirs given, or their dataset not found here).
    """
    from probekit.data import load_dataset
    from probekit.features.cache import FeatureCache

    by_model: dict[str, Path] = {}
    for path in caches:
        with FeatureCache(path) as cache:
            if not cache.spatial_side and {"train", "test"} <= set(cache.splits):
                by_model.setdefault(str(cache.attrs.get("model_id")), path)
    out: dict[str, dict] = {}
    notes: list[str] = []
    datasets: dict[str, ImageDataset | None] = {}
    for table in (t for t in tables.values() if table_kind(t) == "probe"):
        for model, own in table.groupby("model", sort=False):
            probe = probe_order(own["probe"])[0]
            best = best_cells(own[own["probe"] == probe]).iloc[0]
            cache_path = by_model.get(str(model))
            if cache_path is None:
                notes.append(f"{model}: no pooled cache of it given with --cache")
                continue
            with FeatureCache(cache_path) as cache:
                name = str(cache.attrs.get("dataset"))
                if name not in datasets:
                    try:
                        datasets[name] = load_dataset(name, download=False)
                    except (ProbekitError, OSError) as err:
                        datasets[name] = None
                        notes.append(f"{model}: dataset {name} not readable here ({str(err).splitlines()[0]})")
                dataset = datasets[name]
                if dataset is None:
                    continue
                t, layer = int(best["t"]), str(best["layer"])
                train, test = cache.features("train", layer, t), cache.features("test", layer, t)
                train_ids, test_ids = cache.index("train"), cache.index("test")
                train_labels, test_labels = cache.labels("train"), cache.labels("test")
            # the first test image of each class, in test order, then the next ones, up to `queries`
            firsts = [int(np.flatnonzero(test_labels == c)[0]) for c in np.unique(test_labels)]
            chosen = (firsts + [i for i in range(len(test_ids)) if i not in firsts])[:queries]
            order, similarity = nearest(train, test[chosen], k)
            shown = np.arange(min(max_points, len(test_ids)))
            query_images = _images(dataset, "test", test_ids[np.array(chosen)])
            neighbour_images = _images(dataset, "train", train_ids[order.ravel()]).reshape(
                len(chosen), k, *query_images.shape[1:]
            )
            points = embedding(test)[shown]
            out[cell_key(model, probe, t, layer)] = {
                "queries": [
                    {
                        "id": int(test_ids[q]),
                        "label": int(test_labels[q]),
                        "img": thumbnail(query_images[n]),
                        "neighbours": [
                            {
                                "id": int(train_ids[j]),
                                "label": int(train_labels[j]),
                                "sim": f"{s:.3f}",
                                "img": thumbnail(neighbour_images[n, m]),
                            }
                            for m, (j, s) in enumerate(zip(order[n], similarity[n]))
                        ],
                    }
                    for n, q in enumerate(chosen)
                ],
                "embedding": {
                    "x": [round(float(v), 4) for v in points[:, 0]],
                    "y": [round(float(v), 4) for v in points[:, 1]],
                    "label": test_labels[shown].tolist(),
                    "id": test_ids[shown].tolist(),
                    "img": [thumbnail(im) for im in _images(dataset, "test", test_ids[shown])],
                    "of": int(len(test_ids)),
                },
            }
    return out, notes
