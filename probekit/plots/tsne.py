"""t-SNE scatter of one cell's features, coloured by class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import seaborn as sns
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

from probekit.core.errors import ProbekitError
from probekit.plots._common import new_figure, save_figure

# t-SNE on more than ~50 dimensions is slow and no better: the usual recipe reduces with PCA.
_PCA_DIMS = 50


def plot_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    out_path: str | os.PathLike,
    *,
    title: str = "",
    max_points: int = 2000,
    seed: int = 0,
    perplexity: float = 30.0,
) -> Path:
    """Embed ``features`` (N, C) in 2-D with t-SNE and scatter them coloured by ``labels``.

    At most ``max_points`` samples are drawn, stratified by class so rare classes keep their
    share. Features are standardised, reduced to 50 dims with PCA when wider, then embedded with
    ``TSNE(init="pca", random_state=seed)``. ``perplexity`` is lowered to (n - 1) / 3 when there
    are too few points for it. Returns the PNG path.
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ProbekitError(f"t-SNE needs features (N, C) and labels (N,), got {features.shape} and {labels.shape}")
    if len(features) < 5:
        raise ProbekitError(f"t-SNE needs at least 5 samples, got {len(features)}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ProbekitError(f"labels go up to {labels.max()} but only {len(class_names)} class names were given")

    rng = np.random.default_rng(seed)
    keep = stratified_subsample(labels, max_points, rng)
    x = StandardScaler().fit_transform(features[keep].astype(np.float64))
    if x.shape[1] > _PCA_DIMS and len(x) > _PCA_DIMS:
        x = PCA(n_components=_PCA_DIMS, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    embedding = TSNE(init="pca", random_state=seed, perplexity=perplexity).fit_transform(x)

    kept_labels = labels[keep]
    classes = np.unique(kept_labels)
    palette = sns.color_palette("tab10" if len(classes) <= 10 else "husl", len(classes))
    fig = new_figure(width=8.0 if len(classes) > 15 else 6.5, height=5.5)
    ax = fig.add_subplot()
    for colour, c in zip(palette, classes):
        at = kept_labels == c
        ax.scatter(embedding[at, 0], embedding[at, 1], s=6, color=colour, label=class_names[c], alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(x)} samples", fontsize=10)
    ax.legend(
        fontsize=7,
        markerscale=2.5,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncols=1 if len(classes) <= 25 else 2,
        frameon=False,
    )
    return save_figure(fig, out_path)


def stratified_subsample(labels: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ~``max_points`` samples (never more, unless there are more classes than
    that), each class keeping its share of the data and at least one sample.
    """
    if len(labels) <= max_points:
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_points / len(labels))).astype(int)
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=min(q, n), replace=False)
        for c, q, n in zip(classes, quota, counts)
    ]
    return np.sort(np.concatenate(picked))
