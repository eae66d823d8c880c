"""CIFAR-10 with numpy only, for the external (JAX) reference runners (pcx_conv.py).

Reads the extracted python archive ``<root>/CIFAR10/cifar-10-batches-py/{data_batch_1..5,
test_batch}`` (pickles, ``encoding="bytes"``: ``b"data"`` uint8 (10000, 3072) in C, H, W
order per row, ``b"labels"``), the layout pcsim reads through torchvision; read-only is
fine. ``root`` is ``--data-root``, else the environment variable ``PCSIM_DATA``, else
``~/.cache/pcsim/data`` (pcsim's own default).

Normalisation is pcsim's (``pcsim/data.py``: ``_flat_pixels``, ``channel_stats``,
``_standardise_``): pixels to float32 and divided by 255, then each channel standardised
by the mean and standard deviation of that channel over all 50,000 training images (the
full set, also under ``limit_train``), test images with the training statistics.
``channel_stats`` takes torch's ``.std()``, the unbiased (Bessel, N - 1) estimate; this
loader does the same (``ddof=1``; over 51.2M values per channel it differs from the
population std by 1e-8 relative). The statistics are accumulated in float64 and rounded
to float32, then ``(x - mean_c) / std_c`` in float32 as pcsim does. Against pcsim's
loader: the three stds are bitwise equal; torch's float32 ``.mean()`` carries its own
summation error (channel 0: 0.4914008 vs the correctly rounded 0.4913997, 1.1e-6), so the
pixels of channels 0 and 1 differ from pcsim's by at most 4.8e-6 (not bitwise). No
augmentation.

Rows stay flat, shape (N, 3072) in C, H, W order (pcsim's layout, and what the runners'
zero-padded evaluator expects); reshape a row to (3, 32, 32) for a channels-first conv.
Labels come back as int32 indices and as float32 one-hot (N, 10).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

FOLDER = Path("CIFAR10") / "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
SHAPE = (3, 32, 32)
N_CLASSES = 10


def default_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get("PCSIM_DATA")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/pcsim/data").expanduser()


def _read_batches(folder: Path, names) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 rows (N, 3072) and int32 labels (N,) of the pickled batch files ``names``."""
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (need {FOLDER}/{{data_batch_1..5, test_batch}} "
                                    f"under the data root: --data-root or $PCSIM_DATA)")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int32)
        if x.ndim != 2 or x.shape[1] != int(np.prod(SHAPE)) or x.shape[0] != y.shape[0]:
            raise ValueError(f"{path}: data {x.shape} / labels {y.shape}, expected (N, 3072) / (N,)")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def channel_stats(x: np.ndarray, n_channels: int = SHAPE[0]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and unbiased std (N - 1, as torch's ``.std()`` in pcsim's
    ``channel_stats``) of flat channel-major float32 rows ``x`` (N, C*H*W), as float32 (C,)."""
    ch = x.reshape(x.shape[0], n_channels, -1)
    mean = np.empty(n_channels, np.float64)
    std = np.empty(n_channels, np.float64)
    for c in range(n_channels):
        v = ch[:, c].astype(np.float64)
        mean[c] = v.mean()
        std[c] = v.std(ddof=1)
    return mean.astype(np.float32), std.astype(np.float32)


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean_c) / std_c`` per channel in float32, in place (pcsim's ``_standardise_``)."""
    c = mean.shape[0]
    v = x.reshape(x.shape[0], c, -1)
    v -= mean.reshape(1, c, 1)
    v /= std.reshape(1, c, 1)
    return x


def load(root: str | os.PathLike | None = None, *, normalize: bool = True,
         limit_train: int | None = None, limit_test: int | None = None):
    """Return {"train": (x, y, onehot), "test": (x, y, onehot), "mean": (3,), "std": (3,)}.

    ``x`` float32 (N, 3072) channel-major, standardised with the full training set's
    per-channel statistics; ``limit_train`` / ``limit_test`` keep the first N images of
    each split (after the statistics, as pcsim's ``load_dataset``)."""
    folder = default_root(root) / FOLDER
    out = {}
    raw = {"train": _read_batches(folder, TRAIN_FILES), "test": _read_batches(folder, TEST_FILES)}
    xs = {}
    for s in raw:
        xs[s] = raw[s][0].astype(np.float32)
        xs[s] /= np.float32(255.0)
    mean = std = None
    if normalize:
        mean, std = channel_stats(xs["train"])
        for s in xs:
            _standardise(xs[s], mean, std)
    for s, limit in (("train", limit_train), ("test", limit_test)):
        x, y = xs[s], raw[s][1]
        if limit:
            x, y = x[:limit], y[:limit]
        out[s] = (np.ascontiguousarray(x), y, np.eye(N_CLASSES, dtype=np.float32)[y])
    out["mean"], out["std"] = mean, std
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    data = load(a.data_root)
    print("mean", data["mean"].tolist(), "std", data["std"].tolist())
    for split in ("train", "test"):
        x, y, oh = data[split]
        print(split, x.shape, x.dtype, float(x.min()), float(x.max()), y.shape, np.bincount(y).tolist())
