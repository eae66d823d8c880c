"""Data sets through torchvision, from a data root given by config, flag or ``PCSIM_DATA``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

__all__ = ["DataError", "Dataset", "DatasetInfo", "dataset_info", "resolve_data_root",
           "load_dataset", "iterate_batches", "batch_pair", "DEFAULT_DATA_ROOT", "DATA_ENV"]

#: Environment variable naming the data root.
DATA_ENV = "PCSIM_DATA"
#: Data root used when neither config, flag nor environment names one.
DEFAULT_DATA_ROOT = "~/.cache/pcsim/data"

# name -> (torchvision class name, folder under the root, classes, train size, test size,
#          image shape (channels, height, width))
_DATASETS = {
    "mnist": ("MNIST", "MNIST", 10, 60000, 10000, (1, 28, 28)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST", 10, 60000, 10000, (1, 28, 28)),
}


@dataclass(frozen=True)
class DatasetInfo:
    """The shape of a data set, known without loading it."""

    name: str
    image_shape: tuple  # (channels, height, width)
    n_classes: int

    @property
    def n_features(self) -> int:
        """Pixels per flat sample (the input layer's size)."""
        return math.prod(self.image_shape)


def dataset_info(name: str) -> DatasetInfo:
    """Image shape and class count of the data set ``name``."""
    if name not in _DATASETS:
        raise DataError(f"unknown data set {name!r}; valid: {sorted(_DATASETS)}")
    entry = _DATASETS[name]
    return DatasetInfo(name, entry[5], entry[2])


class DataError(RuntimeError):
    """A data set that is missing or corrupt; the message says where pcsim looked."""


@dataclass
class Dataset:
    """A classification data set held as flat float tensors on one device."""

    name: str
    train_x: torch.Tensor  # (N_train, n_0)
    train_y: torch.Tensor  # (N_train,) int64 labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    root: Path
    image_shape: Optional[tuple] = None  # (channels, height, width) of a flat sample

    def to(self, device, dtype) -> "Dataset":
        return Dataset(self.name, self.train_x.to(device, dtype), self.train_y.to(device),
                       self.test_x.to(device, dtype), self.test_y.to(device),
                       self.n_classes, self.root, self.image_shape)

    def one_hot(self, labels: torch.Tensor, dtype) -> torch.Tensor:
        return torch.nn.functional.one_hot(labels, self.n_classes).to(dtype)


def resolve_data_root(config_root: Optional[str] = None, flag_root: Optional[str] = None) -> Path:
    """Return the data root: the command-line flag, else the config's ``data.root``,
    else ``$PCSIM_DATA``, else ``~/.cache/pcsim/data``."""
    for candidate in (flag_root, config_root, os.environ.get(DATA_ENV), DEFAULT_DATA_ROOT):
        if candidate:
            return Path(candidate).expanduser()
    raise AssertionError("unreachable")


def _fail(name: str, root: Path, folder: str, why: str) -> DataError:
    return DataError(
        f"{name}: could not load the data set from {root / folder / 'raw'} ({why}).\n"
        f"pcsim looked in the data root {root} (from --data-root, data.root in the config, "
        f"${DATA_ENV}, or the default {DEFAULT_DATA_ROOT}, in that order).\n"
        f"To fix: on a machine with internet, keep data.download: true and pcsim downloads "
        f"it there; offline, copy the original files (torchvision's layout, "
        f"{folder}/raw/*-ubyte.gz) into {root / folder / 'raw'}, or point --data-root or "
        f"${DATA_ENV} at a writable folder that holds them.")


def load_dataset(name: str, root: Path, *, download: bool = True, normalize: bool = True,
                 limit_train: Optional[int] = None, limit_test: Optional[int] = None) -> Dataset:
    """Load ``name`` (``mnist`` or ``fashion_mnist``) from ``root`` as flat float32 tensors.

    Pixels are scaled to [0, 1] and, with ``normalize``, standardised by the mean and
    standard deviation of the (full) training set.

    Raises
    ------
    DataError
        If the files are missing (and cannot be downloaded), corrupt, or of the wrong size.
    """
    import torchvision  # noqa: PLC0415 - keep `import pcsim.data` light for the CLI's --help

    if name not in _DATASETS:
        raise DataError(f"unknown data set {name!r}; valid: {sorted(_DATASETS)}")
    cls_name, folder, n_classes, n_train, n_test, image_shape = _DATASETS[name]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(root).expanduser()
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, EOFError...
        raise _fail(name, root, folder, f"{type(exc).__name__}: {exc}") from None
    sizes = (len(train.targets), len(test.targets), tuple(train.data.shape[1:]))
    if sizes[:2] != (n_train, n_test) or train.data.shape[0] != n_train:
        raise _fail(name, root, folder, f"expected {n_train} train and {n_test} test images, "
                    f"found {sizes[0]} and {sizes[1]}")
    train_x = train.data.reshape(n_train, -1).to(torch.float32) / 255.0
    test_x = test.data.reshape(n_test, -1).to(torch.float32) / 255.0
    if normalize:
        mean, std = train_x.mean(), train_x.std()
        train_x = (train_x - mean) / std
        test_x = (test_x - mean) / std
    train_y, test_y = train.targets.long(), test.targets.long()
    if limit_train:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    if limit_test:
        test_x, test_y = test_x[:limit_test], test_y[:limit_test]
    return Dataset(name, train_x, train_y, test_x, test_y, n_classes, root, image_shape)


def iterate_batches(n: int, batch_size: int, generator: Optional[torch.Generator] = None,
                    shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Yield index tensors covering ``range(n)`` in batches (the last may be smaller)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def batch_pair(config, data: Dataset, images, labels, dtype):
    """Return ``(x0, target)`` for a batch: the image and the one-hot label
    (classification), the image twice (a BP autoencoder), or no ``x_0`` and the image
    (generative PC: the latent ``x_0`` is inferred)."""
    if config.data.target == "label":
        return images, data.one_hot(labels, dtype)
    return (None if config.network.mode == "generative" else images), images
