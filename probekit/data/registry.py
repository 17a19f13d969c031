"""``load_dataset``: resolve a dataset name or path to a loader, through two registries.

* ``NAMED_DATASETS``: name -> loader, for datasets found in the standard locations
  (:mod:`probekit.data.locations`).
* ``PATH_FORMATS``: format -> (detector, loader), for a path the user points at. Detectors are
  tried in the dict's order, so the specific layouts come before the generic class-folder one.
* ``hf:NAME[:CONFIG]`` and ``hf-disk:PATH``: Hugging Face datasets (:mod:`probekit.data.hf`).

A known name wins over a same-named path in the working directory; write ``./mnist`` for the path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probekit.core.errors import ProbekitError
from probekit.data.base import ImageDataset
from probekit.data.cifar import (
    CIFAR10,
    CIFAR100,
    is_cifar10_folder,
    is_cifar100_folder,
    load_cifar10,
    load_cifar100,
)
from probekit.data.digits import load_digits
from probekit.data.folder import load_folder
from probekit.data.hf import is_hf_spec, load_hf
from probekit.data.idx import is_idx_folder, load_idx
from probekit.data.locations import require_dataset_dir
from probekit.data.npz import is_npz_file, load_npz
from probekit.data.pairs import is_pair_folder, load_pair_folder
from probekit.data.segmentation import is_segmentation_folder, load_segmentation_folder
from probekit.data.tiny_imagenet import FOLDER as TINY_IMAGENET_FOLDER
from probekit.data.tiny_imagenet import is_tiny_imagenet_folder, load_tiny_imagenet


@dataclass(frozen=True)
class DatasetOptions:
    """The keyword arguments of :func:`load_dataset`, handed to every loader."""

    root: str | os.PathLike | None
    download: bool
    test_fraction: float
    seed: int


@dataclass(frozen=True)
class PathFormat:
    detect: Callable[[Path], bool]
    load: Callable[[Path, DatasetOptions], ImageDataset]


def _located(
    name: str,
    folder: str,
    is_complete: Callable[[Path], bool],
    url: str,
    load: Callable[[Path], ImageDataset],
) -> Callable[[DatasetOptions], ImageDataset]:
    """A named loader for a dataset that probekit does not download: find its folder, then load."""
    how_to_get = f"download and extract {url} so that a {folder}/ folder sits in one of those places"
    return lambda options: load(require_dataset_dir(name, folder, options.root, is_complete, how_to_get))


NAMED_DATASETS: dict[str, Callable[[DatasetOptions], ImageDataset]] = {
    "fashion-mnist": lambda o: load_idx("fashion-mnist", root=o.root, download=o.download),
    "mnist": lambda o: load_idx("mnist", root=o.root, download=o.download),
    "cifar10": _located(
        "cifar10",
        CIFAR10.folder,
        is_cifar10_folder,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        load_cifar10,
    ),
    "cifar100": _located(
        "cifar100",
        CIFAR100.folder,
        is_cifar100_folder,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        load_cifar100,
    ),
    "tiny-imagenet": _located(
        "tiny-imagenet",
        TINY_IMAGENET_FOLDER,
        is_tiny_imagenet_folder,
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        load_tiny_imagenet,
    ),
    "digits": lambda o: load_digits(test_fraction=o.test_fraction, seed=o.seed),
}


def _refuse_idx_path(path: Path, options: DatasetOptions) -> ImageDataset:
    # The IDX files do not say whether they hold MNIST or Fashion-MNIST, and the class names differ.
    raise ProbekitError(
        f"{path} holds IDX files; load them by name so the class names are right, e.g. "
        f"load_dataset('fashion-mnist', root='{path}') or load_dataset('mnist', root='{path}')"
    )


PATH_FORMATS: dict[str, PathFormat] = {
    "npz": PathFormat(is_npz_file, lambda p, o: load_npz(p, test_fraction=o.test_fraction, seed=o.seed)),
    "cifar10": PathFormat(is_cifar10_folder, lambda p, o: load_cifar10(p)),
    "cifar100": PathFormat(is_cifar100_folder, lambda p, o: load_cifar100(p)),
    "tiny-imagenet": PathFormat(is_tiny_imagenet_folder, lambda p, o: load_tiny_imagenet(p)),
    "idx": PathFormat(is_idx_folder, _refuse_idx_path),
    "segmentation": PathFormat(is_segmentation_folder, lambda p, o: load_segmentation_folder(p)),
    "pairs": PathFormat(is_pair_folder, lambda p, o: load_pair_folder(p)),
    "folder": PathFormat(Path.is_dir, lambda p, o: load_folder(p, test_fraction=o.test_fraction, seed=o.seed)),
}


def _require_readable(path: Path, spec: str) -> None:
    """An unreadable folder would look empty or fail deep inside a loader; say so up front."""
    try:
        readable = os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0))
    except PermissionError:
        readable = False
    if not readable:
        raise ProbekitError(
            f"cannot read {spec}: permission denied; make it readable (chmod -R u+rX {spec}) or copy "
            f"it somewhere you can read"
        )


def list_datasets() -> list[str]:
    """The dataset names :func:`load_dataset` accepts besides paths."""
    return list(NAMED_DATASETS)


def load_dataset(
    spec: str,
    *,
    root: str | None = None,
    download: bool = True,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
) -> ImageDataset:
    """Load a dataset by name (see :func:`list_datasets`), from a path, or from Hugging Face.

    Args:
        spec: a known name; a path to an ``.npz`` file, a CIFAR-10/100 python folder, a
            ``tiny-imagenet-200`` folder, or a folder of class sub-folders (detected in that order);
            ``hf:NAME[:CONFIG]`` (hub) or ``hf-disk:PATH`` (a ``save_to_disk`` folder).
        root: for names, a directory holding the dataset folder (or the folder itself) instead of
            the standard search locations; ignored for paths.
        download: for names probekit can download (mnist, fashion-mnist), fetch them when absent.
        test_fraction: share of images held out as test, for data without a test split (folder
            with one pool, npz without ``x_test``, digits).
        seed: seed of that holdout.
        image_column: for ``hf:``/``hf-disk:`` data, the image column to read instead of the
            detected one.
        label_column: for ``hf:``/``hf-disk:`` data, the label column to read instead of the
            detected one.

    The returned dataset's ``name`` is the name, or ``spec`` as given for a path.
    """
    if is_hf_spec(spec):
        return load_hf(
            spec,
            image_column=image_column,
            label_column=label_column,
            test_fraction=test_fraction,
            seed=seed,
        )
    for option, value in (("--image-column", image_column), ("--label-column", label_column)):
        if value is not None:
            raise ProbekitError(f"{option} applies to hf: and hf-disk: data only, not to {spec!r}; drop it")
    options = DatasetOptions(root=root, download=download, test_fraction=test_fraction, seed=seed)
    if spec in NAMED_DATASETS:
        return NAMED_DATASETS[spec](options)
    path = Path(spec).expanduser()
    try:
        exists = path.exists()
    except PermissionError:  # a parent folder that may not be searched
        exists = True
    if not exists:
        raise ProbekitError(
            f"unknown dataset {spec!r}: not a known name ({', '.join(NAMED_DATASETS)}), not hf:NAME or "
            f"hf-disk:PATH, and no such path"
        )
    _require_readable(path, spec)
    for path_format in PATH_FORMATS.values():
        if path_format.detect(path):
            return dataclasses.replace(path_format.load(path, options), name=spec)
    raise ProbekitError(
        f"{spec} is not a dataset probekit can read; give an .npz file or a folder ({', '.join(PATH_FORMATS)})"
    )
