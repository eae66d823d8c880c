"""Dense op counts: the analytic formula against hand arithmetic and against a count of
what the torch engine actually executes."""

import math

import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.model import bp_train_cost, feedforward_cost, pc_train_cost
from tests.conftest import make_dynamics, make_network


def test_mnist_pc_count_by_hand():
    """784-512-512-10, supervised, T = 20, tau_w = inf.

    P_1 = 784*512 = 401408, P_2 = 512*512 = 262144, P_3 = 512*10 = 5120.
    Feedforward init: P_1 + P_2 + P_3 = 668672.
    Each step: adjoint and forward of projections 2 and 3 (their pre layers are free;
    x_0 is clamped so W_1 is neither re-run nor transposed): 2 * (262144 + 5120) = 534528.
    Inference: 668672 + 20 * 534528 = 11359232. Learning: 668672. Total 12027904 MACs,
    24055808 FLOPs."""
    net = make_network([784, 512, 512, 10], ["identity", "tanh", "tanh", "identity"])
    cost = pc_train_cost(net, 20)
    assert cost.inference_macs == 11359232
    assert cost.learning_macs == 668672
    assert cost.flops == 24055808
    assert feedforward_cost(net).flops == 2 * 668672
    # BP: forward 668672, backward adjoints of projections 2, 3: 267264, weight grads 668672
    assert bp_train_cost(net).macs == 668672 + 267264 + 668672


def test_plastic_and_generative_counts_by_hand():
    """4-3-2 with tau_w finite: every step re-runs both forward maps (weights moved), the
    adjoint of projection 2 (x_1 free), and both weight-gradient maps.
    P_1 = 12, P_2 = 6: per step 12 + 12 + 6 + 6 + 6 = 42; T = 5: 18 + 5 * 42 = 228.
    Generative, tau_w = inf (x_0 free too): per step 2 * (12 + 6) = 36, 18 + 5 * 36 = 198."""
    net = make_network([4, 3, 2], ["identity", "tanh", "identity"])
    assert pc_train_cost(net, 5, tau_w=1.0).inference_macs == 228
    gen = make_network([4, 3, 2], ["identity", "tanh", "identity"], mode="generative")
    assert pc_train_cost(gen, 5).inference_macs == 198


class _CountingMap:
    """Wrap a projection map and add up the MACs of every map evaluation it performs."""

    def __init__(self, inner, tally):
        self.inner, self.tally = inner, tally
        self.weight, self.bias = inner.weight, inner.bias

    def _add(self, rows):
        self.tally[0] += rows * self.weight.shape[0] * self.weight.shape[1]

    def forward(self, x):
        self._add(x.shape[0])
        return self.inner.forward(x)

    def adjoint(self, g):
        self._add(g.shape[0])
        return self.inner.adjoint(g)

    def weight_grad(self, g, x):
        self._add(g.shape[0])
        return self.inner.weight_grad(g, x)

    def bias_grad(self, g):
        return self.inner.bias_grad(g)


@pytest.mark.parametrize("mode, tau_w", [("supervised", math.inf), ("supervised", 1.0),
                                         ("generative", math.inf)])
def test_engine_executes_exactly_the_analytic_count(mode, tau_w):
    """Counting every map call of one train_batch gives batch * pc_train_cost exactly."""
    net = make_network([6, 5, 4, 3], ["identity", "tanh", "tanh", "identity"], mode=mode)
    eng = TorchEngine(net, make_dynamics(dt=1e-3, tau_x=10e-3, tau_w=tau_w, n_steps=7),
                      dtype=torch.float64)
    tally = [0]
    eng.maps = [None] + [_CountingMap(m, tally) for m in eng.maps[1:]]
    batch = 9
    x0 = torch.randn(batch, 6, dtype=torch.float64)
    target = torch.randn(batch, 3, dtype=torch.float64)
    x0 = None if mode == "generative" else x0
    eng.train_batch(x0, target, torch.optim.SGD(eng.parameters(), lr=0.0))
    assert tally[0] == batch * pc_train_cost(net, 7, tau_w).macs
