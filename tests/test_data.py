"""Data loading: real MNIST from the shared copy, and clear errors when it is missing."""

import gzip

import pytest
import torch

from pcsim.data import DATA_ENV, DataError, load_dataset, resolve_data_root

# Test-set label histogram of MNIST, from shared/datasets/README.md.
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_loads_offline_from_the_shared_copy(mnist_root):
    """torchvision verifies the original .gz files and extracts them without a network;
    the test labels have the published histogram and pixels are standardised."""
    data = load_dataset("mnist", mnist_root, download=True)
    assert data.train_x.shape == (60000, 784) and data.test_x.shape == (10000, 784)
    assert torch.bincount(data.test_y, minlength=10).tolist() == MNIST_TEST_HISTOGRAM
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-4
    fashion = load_dataset("fashion_mnist", mnist_root, download=True, limit_train=100)
    assert fashion.train_x.shape == (100, 784)
    assert torch.bincount(fashion.test_y, minlength=10).tolist() == [1000] * 10


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "empty", download=False)
    message = str(info.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "--data-root" in message and DATA_ENV in message and "download" in message


def test_corrupt_data_gets_the_same_clear_error(tmp_path):
    """A truncated IDX file (what an interrupted extraction leaves) is reported, not a
    traceback from inside torchvision."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="could not load the data set"):
        load_dataset("mnist", tmp_path, download=False)


def test_data_root_precedence(monkeypatch):
    """Flag beats config beats $PCSIM_DATA beats the default."""
    monkeypatch.setenv(DATA_ENV, "/env/root")
    assert str(resolve_data_root("cfg", "flag")) == "flag"
    assert str(resolve_data_root("cfg", None)) == "cfg"
    assert str(resolve_data_root(None, None)) == "/env/root"
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_root(None, None).name == "data"
