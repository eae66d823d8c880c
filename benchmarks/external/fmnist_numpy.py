"""Fashion-MNIST with numpy only, for the external (JAX) reference runners.

Reads torchvision's raw layout ``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(optionally ``.gz``). ``root`` is ``--data-root``, else the environment variable
``PCSIM_DATA``, else ``~/.cache/pcsim/data`` (pcsim's own default).

Normalisation is PCX's MLP example (examples/discriminative_experiments/MLP/fmnist/PC_SE.py):
``ToTensor()`` then ``Normalize((0.5,), (0.5,))`` then flatten, i.e.
``x = (pixel / 255 - 0.5) / 0.5`` in [-1, 1], shape (N, 784), float32. Labels come back as
int32 indices and as float32 one-hot (N, 10).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def default_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get("PCSIM_DATA")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/pcsim/data").expanduser()


def _read_idx(path_no_ext: Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a numpy array of its declared shape."""
    for cand, opener in ((path_no_ext, open), (path_no_ext.with_name(path_no_ext.name + ".gz"), gzip.open)):
        if cand.exists():
            with opener(cand, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(f"{path_no_ext}[.gz] not found")
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x0008xx: unsigned byte
        raise ValueError(f"{path_no_ext}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path_no_ext}: size {arr.size} does not match header {shape}")
    return arr.reshape(shape)


def load_split(split: str, root: str | os.PathLike | None = None):
    """Return (x float32 (N, 784) in [-1, 1], y int32 (N,), y_onehot float32 (N, 10))."""
    raw = default_root(root) / "FashionMNIST" / "raw"
    img_name, lab_name = _FILES[split]
    images = _read_idx(raw / img_name)
    labels = _read_idx(raw / lab_name).astype(np.int32)
    x = images.reshape(images.shape[0], -1).astype(np.float32)
    x = (x / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    onehot = np.eye(10, dtype=np.float32)[labels]
    return x, labels, onehot


def load(root: str | os.PathLike | None = None):
    """Return {"train": (x, y, onehot), "test": (x, y, onehot)}."""
    return {s: load_split(s, root) for s in ("train", "test")}


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    for split, (x, y, oh) in load(a.data_root).items():
        print(split, x.shape, x.dtype, float(x.min()), float(x.max()), y.shape, np.bincount(y).tolist())
