"""Shared fixtures: autouse reseed, tiny networks, the shared data sets."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pcsim.config.schema import DynamicsConfig, NetworkConfig
from pcsim.model import Network

REPO = Path(__file__).resolve().parents[1]

#: float64 round-off for a few hundred accumulated operations on O(1) values.
ROUNDOFF = 1e-12


@pytest.fixture(autouse=True)
def _reseed():
    """Every test starts from the same global RNG state (PCX's reseeding fixture)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def assert_close(actual, expected, atol, rtol=0.0, what=""):
    """``numpy.testing.assert_allclose`` on tensors or arrays, with a named tolerance."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().cpu().numpy()
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=what)


def make_network(sizes, activations, prec=None, mode="supervised") -> Network:
    """A network from a list of sizes and activations (layer 0's is ignored)."""
    prec = prec or [1.0] * len(sizes)
    layers = [{"size": n, "activation": a, "prec": p} for n, a, p in zip(sizes, activations, prec)]
    return Network.from_config(NetworkConfig(mode=mode, layers=layers))


def pairs(store) -> list:
    """``[(W_l, b_l), ...]`` of a parameter store of dense projections, in layer order."""
    n = sum(1 for name in store if name.startswith("W_"))
    return [(store[f"W_{l}"], store[f"b_{l}"]) for l in range(1, n + 1)]


def make_dynamics(**kwargs) -> DynamicsConfig:
    return DynamicsConfig(**kwargs)


def _shared_datasets() -> Path:
    env = os.environ.get("PCSIM_TEST_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A writable data root holding a copy of the shared MNIST and Fashion-MNIST files.

    The shared folder is read-only; torchvision extracts next to the .gz files. In CI
    (``CI`` set) missing data is a failure, elsewhere the data tests are skipped.
    """
    source = _shared_datasets()
    if not (source / "MNIST" / "raw").is_dir():
        message = (f"shared data sets not found at {source}; set PCSIM_TEST_DATASETS to the "
                   "folder that holds MNIST/raw and FashionMNIST/raw")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("data")
    for name in ("MNIST", "FashionMNIST"):
        shutil.copytree(source / name, root / name)
        for path in (root / name).rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
    return root
