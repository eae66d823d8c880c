"""Full-data checks (slow): one PC epoch on all 60,000 MNIST images."""

import pytest

from pcsim.config import load_config
from pcsim.experiment import run_experiment
from tests.conftest import REPO


@pytest.mark.slow
def test_one_pc_epoch_on_full_mnist_beats_96_percent(mnist_root, tmp_path):
    """The shipped config after one epoch: 96.17% in results/mnist_pc_vs_bp (seed 0)."""
    config = load_config(REPO / "networks" / "mnist_pc.yaml",
                         {"learning.epochs": 1, "run.device": "cpu", "run.progress": False,
                          "data.root": str(mnist_root), "run.out": str(tmp_path)})
    result = run_experiment(config, source="mnist_pc.yaml")
    assert result.final_accuracy > 0.96
