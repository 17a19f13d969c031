"""Hugging Face ``datasets``: ``hf:NAME[:CONFIG]`` from the hub, ``hf-disk:PATH`` from ``save_to_disk``.

Images stay in the dataset's Arrow files (memory-mapped) and are decoded with Pillow per batch
(:class:`HFImages`); only the labels are read at load time.

* Columns: the image column is the one ``Image`` feature (or ``image_column``); the label column is
  the one ``ClassLabel`` feature, else an integer or string column named ``label``/``labels`` (or
  ``label_column``). Class names come from the ``ClassLabel`` names; integer labels without them
  are named by their id, string labels sorted.
* Splits: ``train`` is required; ``test`` is the test split. A validation split (``validation``,
  ``valid``, ``val``, ``dev``) is exposed as ``val`` beside a labelled test split, and becomes the
  test split when there is none (or when the test split is unlabelled, as on ImageNet-1k). With
  neither, a stratified seeded holdout of train is the test split. Other splits are left out.
* Mode: an ``Image(mode=...)`` feature decides; otherwise grayscale ("L") only when every image is
  (headers are scanned when the first one is), else RGB.
* Sizes: the headers of the first 1024 images of each split are read (all of them would mean
  reading every byte of the dataset). When their sizes differ the dataset is read at one size
  (:mod:`probekit.data.resize`); when they agree, a later image of another size is an error when
  its batch is read, unless a size is given (``--image-size``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset, ImageSplit, LazyImages
from probekit.data.images import decode_image, image_header, is_grayscale_mode
from probekit.data.sampling import holdout_split

log = logging.getLogger(__name__)

HUB_PREFIX, DISK_PREFIX = "hf:", "hf-disk:"
_VALIDATION_NAMES = ("validation", "valid", "val", "dev")
_LABEL_NAMES = ("label", "labels")
_SCAN_CHUNK = 1024  # rows per header-scan read: bounded memory however large the dataset


def is_hf_spec(spec: str) -> bool:
    return spec.startswith((HUB_PREFIX, DISK_PREFIX))


def load_hf(
    spec: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageDataset:
    """Load ``hf:NAME[:CONFIG]`` (hub; needs network or a filled HF cache) or ``hf-disk:PATH``."""
    datasets = _import_datasets()
    loaded = _load_hub(datasets, spec) if spec.startswith(HUB_PREFIX) else _load_disk(datasets, spec)
    if isinstance(loaded, datasets.Dataset):
        parts, info = {"train": loaded}, {"format": "hf", "test_split": "holdout"}
    else:
        parts, info = _map_splits(spec, dict(loaded)), {"format": "hf"}
    train = parts["train"]
    image = _image_column(spec, train, image_column, datasets)
    label = _label_column(spec, train, label_column, datasets)
    for name, part in parts.items():
        if image not in part.column_names or label not in part.column_names:
            missing = image if image not in part.column_names else label
            raise ProbekitError(
                f"{spec}: the {name} split has no column {missing!r} (it has "
                f"{', '.join(part.column_names)}); its splits must share their columns"
            )
    labels = {name: _labels(part, label) for name, part in parts.items()}
    if "test" in labels and _unlabelled(labels["test"]):
        # ImageNet-1k's hub test split, for one, carries -1 for every label.
        log.info("%s: the test split is unlabelled (-1), so it is not read", spec)
        del parts["test"], labels["test"]
    if "test" in parts:
        info["test_split"] = "official"
    elif "val" in parts:
        parts["test"], labels["test"] = parts.pop("val"), labels.pop("val")
        info["test_split"] = "validation"
    class_names, labels = _class_names(spec, train, label, labels, datasets)
    mode, shape = _mode_and_shape(spec, parts, image, datasets)
    images = {
        name: HFImages(part, image, mode, shape, where=f"the {name} split of {spec}") for name, part in parts.items()
    }
    mixed = _mixed_sizes(images)
    for part_images in images.values():
        part_images.mixed_sizes = mixed
    info.update(image_column=image, label_column=label)
    if "test" not in parts:
        train_split, test_split = holdout_split(images["train"], labels["train"], test_fraction, seed)
        splits = {"train": train_split, "test": test_split}
        info.update(test_split="holdout", test_fraction=test_fraction, holdout_seed=seed)
    else:
        splits = {
            name: ImageSplit(images[name], labels[name], np.arange(len(labels[name]), dtype=np.int64)) for name in parts
        }
    return ImageDataset(spec, splits, class_names, spec, info)


class HFImages(LazyImages):
    """The image column of a ``datasets.Dataset``, decoded with Pillow in ``mode`` when read."""

    def __init__(
        self,
        table: Any,
        column: str,
        mode: str,
        image_shape: tuple[int, int, int],
        *,
        where: str,
        rows: np.ndarray | None = None,
    ) -> None:
        # Arrow format hands back the stored {bytes, path} structs: nothing decoded but what we ask.
        self.table = table.with_format("arrow", columns=[column])
        self.column, self.mode, self.where = column, mode, where
        super().__init__(np.arange(len(table)) if rows is None else rows, image_shape)

    def decode(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        for row, stored in zip(rows, self._stored(rows), strict=True):
            yield decode_image(_open(stored, self.describe(int(row))), self.mode, self.describe(int(row)))

    def describe(self, row: int) -> str:
        return f"row {row} of {self.where}"

    def headers(self, rows: np.ndarray) -> Iterator[tuple[str, tuple[int, int]]]:
        """(mode, (width, height)) of each row's image, from its header only."""
        for row, stored in zip(rows, self._stored(rows), strict=True):
            yield image_header(_open(stored, self.describe(int(row))), self.describe(int(row)))

    def _stored(self, rows: np.ndarray) -> list[dict | None]:
        return self.table[[int(r) for r in rows]].column(self.column).to_pylist()


def _open(stored: dict | None, name: str) -> io.BytesIO | str:
    if stored and stored.get("bytes") is not None:
        return io.BytesIO(stored["bytes"])
    if stored and stored.get("path"):
        return stored["path"]
    raise ProbekitError(f"{name} has no image (empty cell); remove the row or fill it")


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ProbekitError(
            "hf: and hf-disk: data need the Hugging Face datasets library: pip install datasets"
        ) from None
    return datasets


def _load_hub(datasets: Any, spec: str) -> Any:
    name, _, config = spec[len(HUB_PREFIX) :].partition(":")
    if not name:
        raise ProbekitError(f"{spec!r} names no dataset; write hf:NAME or hf:NAME:CONFIG, e.g. hf:ylecun/mnist")
    try:
        return datasets.load_dataset(name, config or None)
    except Exception as err:  # noqa: BLE001 -- not found, no network, gated, bad config: one message
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ProbekitError(
            f"cannot load {name!r} from the Hugging Face hub ({first}); check the name and config, "
            f"your network, or save it with save_to_disk and use hf-disk:PATH"
        ) from err


def _load_disk(datasets: Any, spec: str) -> Any:
    path = spec[len(DISK_PREFIX) :]
    try:
        return datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise ProbekitError(
            f"{path} is not a folder written by datasets' save_to_disk ({str(err).splitlines()[0][:160]}); "
            f"check the path"
        ) from err
    except PermissionError as err:
        raise ProbekitError(f"cannot read {path}: permission denied; make it readable") from err


def _map_splits(spec: str, parts: dict[str, Any]) -> dict[str, Any]:
    """Train / test / val from the dataset's own split names; other splits are left out."""
    if "train" not in parts:
        raise ProbekitError(
            f"{spec} has splits {', '.join(parts) or '(none)'} but none named 'train'; probekit reads "
            f"train, test and validation: rename the splits (DatasetDict keys) before save_to_disk"
        )
    mapped = {"train": parts["train"]}
    if "test" in parts:
        mapped["test"] = parts["test"]
    validation = next((name for name in _VALIDATION_NAMES if name in parts), None)
    if validation is not None:
        mapped["val"] = parts[validation]
    left_out = sorted(set(parts) - {"train", "test", validation})
    if left_out:
        log.info("%s: splits %s are not read (probekit reads train, test, validation)", spec, ", ".join(left_out))
    return mapped


def _describe_columns(part: Any) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in part.features.items())


def _image_column(spec: str, part: Any, given: str | None, datasets: Any) -> str:
    images = [name for name, feature in part.features.items() if isinstance(feature, datasets.Image)]
    if given is not None:
        if given not in part.features:
            raise ProbekitError(
                f"{spec} has no column {given!r} (--image-column); its columns: {_describe_columns(part)}"
            )
        if given not in images:
            raise ProbekitError(
                f"column {given!r} of {spec} is {type(part.features[given]).__name__}, not an image; "
                f"give an Image column to --image-column ({', '.join(images) or 'there is none'})"
            )
        return given
    if len(images) == 1:
        return images[0]
    if not images:
        raise ProbekitError(f"{spec} has no Image column; its columns: {_describe_columns(part)}")
    raise ProbekitError(f"{spec} has several Image columns ({', '.join(images)}); choose one with --image-column")


def _label_column(spec: str, part: Any, given: str | None, datasets: Any) -> str:
    features = part.features
    if given is not None:
        if given not in features:
            raise ProbekitError(
                f"{spec} has no column {given!r} (--label-column); its columns: {_describe_columns(part)}"
            )
        if not _is_label_feature(features[given], datasets):
            raise ProbekitError(
                f"column {given!r} of {spec} is {features[given]!r}, not a class label; give "
                f"--label-column a ClassLabel, integer or string column"
            )
        return given
    class_labels = [name for name, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    if len(class_labels) > 1:
        raise ProbekitError(
            f"{spec} has several ClassLabel columns ({', '.join(class_labels)}); choose one with --label-column"
        )
    named = next((n for n in _LABEL_NAMES if n in features and _is_label_feature(features[n], datasets)), None)
    if named is None:
        raise ProbekitError(
            f"{spec} has no label column (no ClassLabel, no integer 'label'); name one with "
            f"--label-column; its columns: {_describe_columns(part)}"
        )
    return named


def _is_label_feature(feature: Any, datasets: Any) -> bool:
    if isinstance(feature, datasets.ClassLabel):
        return True
    return isinstance(feature, datasets.Value) and (
        feature.dtype.startswith(("int", "uint")) or feature.dtype in ("string", "large_string")
    )


def _unlabelled(ids: np.ndarray) -> bool:
    return ids.dtype.kind in "iu" and len(ids) > 0 and bool((ids < 0).all())


def _labels(part: Any, column: str) -> np.ndarray:
    return np.asarray(part.with_format("numpy", columns=[column])[column])


def _class_names(
    spec: str, train: Any, column: str, labels: dict[str, np.ndarray], datasets: Any
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class names and int64 label ids per split."""
    feature = train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), {name: ids.astype(np.int64) for name, ids in labels.items()}
    if feature.dtype in ("string", "large_string"):
        names = sorted(set().union(*(set(ids.tolist()) for ids in labels.values())))
        lookup = {name: i for i, name in enumerate(names)}
        return names, {
            split: np.fromiter((lookup[v] for v in ids.tolist()), np.int64, len(ids)) for split, ids in labels.items()
        }
    low = min(int(ids.min()) for ids in labels.values() if len(ids))
    if low < 0:
        raise ProbekitError(f"column {column!r} of {spec} has label {low}; integer labels must be class ids 0..K-1")
    high = max(int(ids.max()) for ids in labels.values() if len(ids))
    return [str(i) for i in range(high + 1)], {name: ids.astype(np.int64) for name, ids in labels.items()}


def _mode_and_shape(spec: str, parts: dict[str, Any], column: str, datasets: Any) -> tuple[str, tuple[int, int, int]]:
    """Pillow mode and the (H, W, C) every image must have, from the feature and the first image."""
    train = parts["train"]
    if len(train) == 0:
        raise ProbekitError(f"the train split of {spec} is empty; add images to it")
    probe = HFImages(train, column, "RGB", (1, 1, 3), where=f"the train split of {spec}")
    first_mode, (width, height) = next(probe.headers(np.array([0])))
    declared = train.features[column].mode
    if declared is not None:
        mode = "L" if is_grayscale_mode(declared) else "RGB"
    elif is_grayscale_mode(first_mode) and _all_grayscale(spec, parts, column):
        mode = "L"
    else:
        mode = "RGB"
    return mode, (height, width, 1 if mode == "L" else 3)


def _mixed_sizes(images: dict[str, HFImages]) -> str | None:
    """How the sizes of the first images of the splits differ, or None when they share one."""
    first: tuple[str, tuple[int, int]] | None = None
    for part in images.values():
        rows = np.arange(min(_SCAN_CHUNK, len(part)))
        for row, (_, size) in zip(rows, part.headers(rows), strict=True):
            if first is None:
                first = (part.describe(int(row)), size)
            elif size != first[1]:
                return f"{part.describe(int(row))} is {size[0]}x{size[1]} but {first[0]} is {first[1][0]}x{first[1][1]}"
    return None


def _all_grayscale(spec: str, parts: dict[str, Any], column: str) -> bool:
    """Scan every header, a chunk at a time; stops at the first colour image."""
    for name, part in parts.items():
        images = HFImages(part, column, "L", (1, 1, 1), where=f"the {name} split of {spec}")
        for start in range(0, len(part), _SCAN_CHUNK):
            rows = np.arange(start, min(start + _SCAN_CHUNK, len(part)))
            if not all(is_grayscale_mode(mode) for mode, _ in images.headers(rows)):
                return False
    return True
