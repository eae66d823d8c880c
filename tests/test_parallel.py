"""Data-parallel training with torch.distributed: 2 gloo processes on the CPU learn the
same weights as one process with the same global batch."""

import json

import pytest
import torch

from pcsim.cli import main
from tests.conftest import REPO, assert_close

ARGS = ["--set", "network.layers.1.size=32", "--set", "network.layers.2.size=32",
        "--set", "data.limit_train=600", "--set", "data.limit_test=300",
        "--set", "dynamics.n_steps=4", "--set", "learning.batch_size=50",
        "--set", "run.device=cpu", "--set", "run.dtype=float64", "--set", "run.threads=1",
        "--epochs", "2", "--no-progress"]


def test_two_gloo_processes_equal_one_process(mnist_root, tmp_path, capfd):
    """Global batch 50 split over 2 ranks (25 each, interleaved): the all-reduced local
    gradients equal the global batch mean, so after 24 Adam steps the weights agree with
    a single process to float64 round-off, and so do the metrics and op counts. The two
    processes say each epoch line and the summary once, and both exit cleanly."""
    common = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path)]
    config = str(REPO / "networks" / "mnist_pc.yaml")
    assert main(["run", config, "--set", "run.name=one", *common]) == 0
    capfd.readouterr()
    assert main(["run", config, "--nproc", "2", "--set", "run.name=two", *common]) == 0
    said = capfd.readouterr()
    lines = said.out.splitlines()
    assert sum(line.startswith("epoch 1:") for line in lines) == 1, said.out
    assert sum(line.startswith("epoch 2:") for line in lines) == 1, said.out
    assert sum("after 2 epochs; run folder" in line for line in lines) == 1, said.out
    assert "terminate called" not in said.err and "Traceback" not in said.err, said.err
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert list(one["params"]["tensors"]) == list(two["params"]["tensors"]) == [
        "W_1", "b_1", "W_2", "b_2", "W_3", "b_3"]
    for a, b in zip(one["params"]["tensors"].values(), two["params"]["tensors"].values()):
        assert_close(b, a, atol=1e-12)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for r1, r2 in zip(m1, m2):
        assert r1["test_accuracy"] == r2["test_accuracy"]
        assert abs(r1["train_energy_final"] - r2["train_energy_final"]) < 1e-12
    assert m1[-1]["ops_per_train_sample"] == m2[-1]["ops_per_train_sample"]
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2


def test_learned_precisions_are_all_reduced_like_the_weights(mnist_root, tmp_path):
    """Learned variances (per neuron on layer 1, per layer on layer 3) are tensors of the
    parameter store: the 2-rank all-reduce gives them the global batch's gradient, so
    they, the weights and the recorded variance metrics agree with one process to
    float64 round-off."""
    common = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path),
              "--set", "network.layers.1.precision={per: neuron}",
              "--set", "network.layers.3.precision={per: layer, init: 0.5}"]
    config = str(REPO / "networks" / "mnist_pc.yaml")
    assert main(["run", config, "--set", "run.name=one", *common]) == 0
    assert main(["run", config, "--nproc", "2", "--set", "run.name=two", *common]) == 0
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["params"]["tensors"]
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["params"]["tensors"]
    assert list(one) == list(two) and {"log_sigma2_1", "log_sigma2_3"} <= set(one)
    for name in one:
        assert_close(two[name], one[name], atol=1e-12, what=name)
    assert float(one["log_sigma2_3"]) != pytest.approx(float(torch.tensor(0.5).log()))
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())[-1]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())[-1]
    for key in ("variance_min_l1", "variance_max_l1", "variance_min_l3"):
        assert abs(m1[key] - m2[key]) < 1e-12, key


CONV_NET = """\
network:
  layers:
    - {shape: [1, 28, 28]}
    - {shape: [4, 14, 14], activation: gelu,
       projection: {kind: conv2d, kernel: 3, padding: 1, pool: max}}
    - {shape: [6, 7, 7], activation: tanh,
       projection: {kind: conv2d, kernel: 3, padding: 1, pool: avg}}
    - {size: 10, activation: identity}
dynamics: {tau_x: 10 ms, dt: 1 ms, n_steps: 4}
learning: {rule: RULE, optimizer: adamw, lr: 1.0e-3, batch_size: 50, epochs: 1, seed: 0}
data: {dataset: mnist, limit_train: 400, limit_test: 200,
       augment: {crop_padding: 2, hflip: true}}
run: {device: cpu, dtype: float64, threads: 1, progress: false}
"""


@pytest.mark.parametrize("rule", ["pc", "bp"])
def test_conv_net_two_gloo_processes_equal_one_process(mnist_root, tmp_path, rule):
    """A conv net (max and average pooling, augmentation on: each image's crop and flip
    do not depend on which rank holds it) trained by 2 gloo ranks equals one process."""
    config = tmp_path / "conv.yaml"
    config.write_text(CONV_NET.replace("RULE", rule))
    common = ["--data-root", str(mnist_root), "--out", str(tmp_path), "--no-progress"]
    assert main(["run", str(config), "--set", "run.name=one", *common]) == 0
    assert main(["run", str(config), "--nproc", "2", "--set", "run.name=two", *common]) == 0
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert list(one["params"]["tensors"]) == list(two["params"]["tensors"])
    for name, a in one["params"]["tensors"].items():
        assert_close(two["params"]["tensors"][name], a, atol=1e-12)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1[-1]["test_accuracy"] == m2[-1]["test_accuracy"]
