"""The predictions sidecar: every cell's test predictions, kept beside a results table.

A results CSV ``results.csv`` has its sidecar at ``results.predictions.npz``
(:func:`predictions_path`). Paired comparisons (``probekit compare``) read it: two runs are
compared image by image, so both must hold the same test images in the same order.

Format (``numpy.savez_compressed``, read with ``allow_pickle=False``; version 1)::

    format          "probekit-predictions"        format_version  1
    model, dataset  the run's model id and dataset id (0-d str)
    index           (N,) int64   test sample ids, in the order of the prediction columns
    labels          (N,) int64   true test labels
    probe, layer    (M,) str     one entry per kept cell
    t               (M,) int64   the cell's timestep index
    predictions     (M, N) int32 predicted class of each test image, row m for cell m
    val_index       (V,) int64   train sample ids held out as the validation split (empty when
                                 the choice was made on test; the dataset's own val ids otherwise)
    val_fraction    0-d float    the --val-fraction asked for (NaN for a dataset's own val split)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probekit.core.atomic import publish
from probekit.core.errors import ProbekitError

FORMAT = "probekit-predictions"
FORMAT_VERSION = 1


@dataclass
class PredictionSet:
    """Test predictions of many (probe, t, layer) cells on the same N test images."""

    model: str
    dataset: str
    index: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    probe: list[str]
    t: list[int]
    layer: list[str]
    predictions: np.ndarray  # (M, N) int32
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    val_fraction: float = float("nan")

    def row(self, probe: str, t: int, layer: str) -> np.ndarray:
        """(N,) predictions of one cell; a clear error when the sidecar does not hold it."""
        for m, key in enumerate(zip(self.probe, self.t, self.layer)):
            if key == (probe, int(t), layer):
                return self.predictions[m]
        raise ProbekitError(
            f"the predictions sidecar of {self.model} holds no cell ({probe}, t={t}, {layer}): "
            "re-run `probekit probe` to write it"
        )

    def correct(self, probe: str, t: int, layer: str) -> np.ndarray:
        """(N,) bool: which test images the cell classifies correctly."""
        return self.row(probe, t, layer) == self.labels


def predictions_path(results_path: str | os.PathLike) -> Path:
    """``out/results.csv`` -> ``out/results.predictions.npz``."""
    path = Path(results_path)
    return path.with_name(path.stem + ".predictions.npz")


def write_predictions(path: str | os.PathLike, predictions: PredictionSet) -> Path:
    """Write ``predictions`` atomically (a reader never sees a half-written file)."""
    p = predictions
    m, n = len(p.probe), len(p.index)
    if not (len(p.t) == len(p.layer) == m and p.predictions.shape == (m, n) and p.labels.shape == (n,)):
        raise ProbekitError("predictions sidecar: cells, index, labels and predictions disagree in size")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(
            tmp,
            format=np.array(FORMAT),
            format_version=np.array(FORMAT_VERSION),
            model=np.array(p.model),
            dataset=np.array(p.dataset),
            index=np.asarray(p.index, dtype=np.int64),
            labels=np.asarray(p.labels, dtype=np.int64),
            probe=np.array(p.probe, dtype=str),
            t=np.asarray(p.t, dtype=np.int64),
            layer=np.array(p.layer, dtype=str),
            predictions=np.asarray(p.predictions, dtype=np.int32),
            val_index=np.asarray(p.val_index, dtype=np.int64),
            val_fraction=np.array(float(p.val_fraction)),
        )
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_predictions(path: str | os.PathLike) -> PredictionSet:
    """Read a sidecar written by :func:`write_predictions`; refuses anything else, without unpickling."""
    path = Path(path)
    if not path.is_file():
        raise ProbekitError(
            f"no predictions sidecar at {path}: re-run `probekit probe` (it writes one beside the results CSV)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ProbekitError(f"{path} is not a readable predictions sidecar ({err})") from err
    if str(fields.get("format", "")) != FORMAT:
        raise ProbekitError(f"{path} is not a probekit predictions sidecar")
    if int(fields["format_version"]) > FORMAT_VERSION:
        raise ProbekitError(f"{path} has format version {int(fields['format_version'])}: upgrade probekit to read it")
    return PredictionSet(
        model=str(fields["model"]),
        dataset=str(fields["dataset"]),
        index=fields["index"].astype(np.int64),
        labels=fields["labels"].astype(np.int64),
        probe=[str(x) for x in fields["probe"]],
        t=[int(x) for x in fields["t"]],
        layer=[str(x) for x in fields["layer"]],
        predictions=fields["predictions"],
        val_index=fields.get("val_index", np.zeros(0, dtype=np.int64)).astype(np.int64),
        val_fraction=float(fields.get("val_fraction", np.nan)),
    )
