"""Data sets through torchvision, from a data root given by config, flag or ``PCSIM_DATA``,
and the optional augmentation of training batches."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import torch

__all__ = ["DataError", "Dataset", "DatasetInfo", "dataset_info", "resolve_data_root",
           "load_dataset", "iterate_batches", "batch_pair", "channel_stats",
           "DEFAULT_DATA_ROOT", "DATA_ENV"]

#: Environment variable naming the data root.
DATA_ENV = "PCSIM_DATA"
#: Data root used when neither config, flag nor environment names one.
DEFAULT_DATA_ROOT = "~/.cache/pcsim/data"


class _Spec(NamedTuple):
    cls_name: str  # torchvision.datasets class
    folder: str  # folder under the data root
    n_classes: int
    n_train: int
    n_test: int
    image_shape: tuple  # (channels, height, width)
    # where the files live below root / folder, and what an offline copy must hold
    files: str
    offline: str
    # torchvision's root argument is root / folder (CIFAR: it holds cifar-*-python/);
    # False: it is the data root itself (MNIST: torchvision appends MNIST/raw)
    root_is_folder: bool


# Layout under the data root: torchvision's own, with one folder per data set, so a root
# can hold them all: MNIST/raw/, FashionMNIST/raw/, CIFAR10/cifar-10-batches-py/,
# CIFAR100/cifar-100-python/ (the extracted archives; the .tar.gz is not needed).
_DATASETS = {
    "mnist": _Spec("MNIST", "MNIST", 10, 60000, 10000, (1, 28, 28), "raw",
                   "MNIST/raw/*-ubyte.gz", False),
    "fashion_mnist": _Spec("FashionMNIST", "FashionMNIST", 10, 60000, 10000, (1, 28, 28),
                           "raw", "FashionMNIST/raw/*-ubyte.gz", False),
    "cifar10": _Spec("CIFAR10", "CIFAR10", 10, 50000, 10000, (3, 32, 32),
                     "cifar-10-batches-py", "CIFAR10/cifar-10-batches-py/{data_batch_1..5, "
                     "test_batch, batches.meta}, the extracted cifar-10-python.tar.gz", True),
    "cifar100": _Spec("CIFAR100", "CIFAR100", 100, 50000, 10000, (3, 32, 32),
                      "cifar-100-python", "CIFAR100/cifar-100-python/{train, test, meta}, "
                      "the extracted cifar-100-python.tar.gz", True),
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
    spec = _DATASETS[name]
    return DatasetInfo(name, spec.image_shape, spec.n_classes)


class DataError(RuntimeError):
    """A data set that is missing or corrupt; the message says where pcsim looked."""


@dataclass
class Dataset:
    """A classification data set held as flat float tensors on one device.

    A flat sample is the image in channel-major ``(C, H, W)`` order. ``mean`` and ``std``
    are the per-channel statistics of the (full) training set in [0, 1] pixel units that
    standardised the pixels (None when ``normalize`` was off).
    """

    name: str
    train_x: torch.Tensor  # (N_train, n_0)
    train_y: torch.Tensor  # (N_train,) int64 labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    root: Path
    image_shape: Optional[tuple] = None  # (channels, height, width) of a flat sample
    mean: Optional[tuple] = None  # per channel, of the training pixels in [0, 1]
    std: Optional[tuple] = None

    def to(self, device, dtype) -> "Dataset":
        return Dataset(self.name, self.train_x.to(device, dtype), self.train_y.to(device),
                       self.test_x.to(device, dtype), self.test_y.to(device),
                       self.n_classes, self.root, self.image_shape, self.mean, self.std)

    def one_hot(self, labels: torch.Tensor, dtype) -> torch.Tensor:
        return torch.nn.functional.one_hot(labels, self.n_classes).to(dtype)


def resolve_data_root(config_root: Optional[str] = None, flag_root: Optional[str] = None) -> Path:
    """Return the data root: the command-line flag, else the config's ``data.root``,
    else ``$PCSIM_DATA``, else ``~/.cache/pcsim/data``."""
    for candidate in (flag_root, config_root, os.environ.get(DATA_ENV), DEFAULT_DATA_ROOT):
        if candidate:
            return Path(candidate).expanduser()
    raise AssertionError("unreachable")


class CorruptDataError(RuntimeError):
    """A data file is present but damaged (its md5 is not the published one)."""


def _fail(name: str, root: Path, spec: _Spec, why: str) -> DataError:
    where = root / spec.folder / spec.files
    looked = (f"{name}: could not load the data set from {where} ({why}).\n"
              f"pcsim looked in the data root {root} (from --data-root, data.root in the "
              f"config, ${DATA_ENV}, or the default {DEFAULT_DATA_ROOT}, in that order).\n")
    if not spec.root_is_folder:  # MNIST: torchvision extracts the .gz files in place
        return DataError(
            looked + f"To fix: on a machine with internet, keep data.download: true and pcsim "
            f"downloads it there; offline, copy the original files (torchvision's layout, "
            f"{spec.offline}) into {where}, or point --data-root or ${DATA_ENV} at a "
            f"writable folder that holds them.")
    return DataError(
        looked + f"To fix: on a machine with internet, keep data.download: true and pcsim "
        f"downloads and extracts it into {root / spec.folder}; offline, put the files "
        f"(torchvision's layout, {spec.offline}) into {where}, or point --data-root or "
        f"${DATA_ENV} at a folder that holds {spec.folder}/{spec.files}/ (it may be "
        f"read-only).")


def _corrupt_files(cls, root: Path) -> list:
    """The data files present under ``root`` whose md5 is not the one torchvision checks
    (a truncated copy, a failed download): ``[(path, expected md5)]``."""
    import hashlib  # noqa: PLC0415
    if hasattr(cls, "resources"):  # MNIST-like: raw/<name>.gz
        folder = root / cls.__name__ / "raw"
        expected = [(name.rsplit("/", 1)[-1], md5) for name, md5 in cls.resources]
    else:  # CIFAR: <base_folder>/<batch files>
        folder = root / getattr(cls, "base_folder", "")
        expected = list(getattr(cls, "train_list", [])) + list(getattr(cls, "test_list", []))
    bad = []
    for name, md5 in expected:
        path = folder / name
        if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != md5:
            bad.append((path, md5))
    return bad


_LOCK = ".pcsim-data.lock"


@contextlib.contextmanager
def _first_use_lock(folder: Path):
    """Hold an exclusive lock on a data folder while its files are checked, downloaded
    and extracted: runs started together on a fresh root take turns, the first extracts
    and the others find the files made (without it, one run read another's half-written
    file and failed). A folder where no lock file can be made (read-only, in place) is
    used without one."""
    try:
        import fcntl
        handle = open(folder / _LOCK, "a+")
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()


def _open(cls, root: Path, train: bool, download: bool):
    """One split through torchvision. With ``download``, files that are already there and
    verify are used without calling ``download()`` (which would verify CIFAR's md5s a
    second time, +0.4 s); only a failure falls back to torchvision's download."""
    try:
        return cls(str(root), train=train, download=False)
    except Exception:  # noqa: BLE001 - the retry reports what is still wrong
        corrupt = _corrupt_files(cls, root)
        if corrupt:  # a download would not replace them: say what is wrong with them
            path, md5 = corrupt[0]
            raise CorruptDataError(
                f"the file present is corrupt (md5 mismatch): {path} (expected md5 {md5}"
                + (f"; {len(corrupt) - 1} more" if len(corrupt) > 1 else "")
                + "); delete it or copy it again") from None
        if not download:
            raise
    return cls(str(root), train=train, download=True)


def _flat_pixels(images, n: int) -> torch.Tensor:
    """torchvision's images as flat float32 rows in [0, 1], channel-major: MNIST's
    ``.data`` is a (N, H, W) uint8 tensor, CIFAR's a (N, H, W, C) uint8 numpy array."""
    images = torch.as_tensor(images)
    if images.ndim == 4:  # HWC -> CHW before flattening
        images = images.permute(0, 3, 1, 2)
    pixels = torch.empty(images.shape, dtype=torch.float32)
    pixels.copy_(images)  # converts and transposes in one pass
    return pixels.view(n, -1).div_(255.0)


def _chw(images) -> tuple:
    shape = tuple(images.shape[1:])
    return (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])


def channel_stats(x: torch.Tensor, n_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of flat channel-major rows
    ``x`` (N, C*H*W), as tensors of shape (C,) in ``x``'s dtype.

    Each channel's statistics are ``.mean()`` and ``.std()`` over all of its elements (a
    strided view, no copy), so for one channel they are bitwise the global ``x.mean()``
    and ``x.std()`` that pcsim used before per-channel normalisation (reference runs
    compare weights bitwise; a test holds it)."""
    channels = x.view(x.shape[0], n_channels, -1)
    return (torch.stack([channels[:, c].mean() for c in range(n_channels)]),
            torch.stack([channels[:, c].std() for c in range(n_channels)]))


def _standardise_(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean_c) / std_c`` per channel, in place (the same float32 operations per
    element as the out-of-place formula, without a second 600 MB copy for CIFAR)."""
    c = mean.numel()
    x.view(x.shape[0], c, -1).sub_(mean.view(1, c, 1)).div_(std.view(1, c, 1))
    return x


def load_dataset(name: str, root: Path, *, download: bool = True, normalize: bool = True,
                 limit_train: Optional[int] = None, limit_test: Optional[int] = None) -> Dataset:
    """Load ``name`` (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``) from
    ``root`` as flat float32 tensors, each row an image in (C, H, W) order.

    Pixels are scaled to [0, 1] and, with ``normalize``, each channel is standardised by
    the mean and standard deviation of that channel over the (full) training set; the
    statistics are kept as ``Dataset.mean`` and ``Dataset.std``.

    Layout under ``root``: ``MNIST/raw/``, ``FashionMNIST/raw/`` (torchvision extracts the
    .gz files there, so the root must be writable), ``CIFAR10/cifar-10-batches-py/``,
    ``CIFAR100/cifar-100-python/`` (read in place, read-only is fine).

    Raises
    ------
    DataError
        If the files are missing (and cannot be downloaded), corrupt, or of the wrong size.
    """
    import torchvision  # noqa: PLC0415 - keep `import pcsim.data` light for the CLI's --help

    if name not in _DATASETS:
        raise DataError(f"unknown data set {name!r}; valid: {sorted(_DATASETS)}")
    spec = _DATASETS[name]
    cls = getattr(torchvision.datasets, spec.cls_name)
    root = Path(root).expanduser()
    tv_root = root / spec.folder if spec.root_is_folder else root
    made = [p for p in (tv_root, *tv_root.parents) if not p.exists()]  # a download makes them
    try:
        if download:
            tv_root.mkdir(parents=True, exist_ok=True)
        with _first_use_lock(tv_root) if download else contextlib.nullcontext():
            train = _open(cls, tv_root, True, download)
            test = _open(cls, tv_root, False, download)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, EOFError...
        for folder in made:  # a failed load leaves no empty folders behind
            try:
                (folder / _LOCK).unlink(missing_ok=True)
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, CorruptDataError):
            raise DataError(f"{name}: {exc}") from None
        raise _fail(name, root, spec, f"{type(exc).__name__}: {exc}") from None
    n_train, n_test = len(train.targets), len(test.targets)
    if (n_train, n_test) != (spec.n_train, spec.n_test) or len(train.data) != n_train \
            or len(test.data) != n_test:
        raise _fail(name, root, spec, f"expected {spec.n_train} train and {spec.n_test} test "
                    f"images, found {n_train} and {n_test}")
    for split in (train, test):
        if _chw(split.data) != spec.image_shape:
            raise _fail(name, root, spec, f"expected images of shape {spec.image_shape} "
                        f"(C, H, W), found {_chw(split.data)}")
    train_x, test_x = _flat_pixels(train.data, n_train), _flat_pixels(test.data, n_test)
    train_y, test_y = torch.as_tensor(train.targets).long(), torch.as_tensor(test.targets).long()
    for labels in (train_y, test_y):
        if labels.min() < 0 or labels.max() >= spec.n_classes:
            raise _fail(name, root, spec, f"labels outside 0..{spec.n_classes - 1}")
    mean = std = None
    if normalize:
        mean_t, std_t = channel_stats(train_x, spec.image_shape[0])
        train_x = _standardise_(train_x, mean_t, std_t)
        test_x = _standardise_(test_x, mean_t, std_t)
        mean, std = tuple(mean_t.tolist()), tuple(std_t.tolist())
    if limit_train:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    if limit_test:
        test_x, test_y = test_x[:limit_test], test_y[:limit_test]
    return Dataset(name, train_x, train_y, test_x, test_y, spec.n_classes, root,
                   spec.image_shape, mean, std)


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
