"""Dense op counts: the analytic formula against hand arithmetic and against a count of
what the torch engine actually executes."""

import math

import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.model import bp_train_cost, feedforward_cost, pc_train_cost
from pcsim.model.costs import inference_wavefront
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
        self.weight = inner.weight
        self.tensors, self.decayed, self.pool = inner.tensors, inner.decayed, inner.pool

    def _add(self, rows):
        self.tally[0] += rows * self.weight.shape[0] * self.weight.shape[1]

    def forward(self, x):
        self._add(x.shape[0])
        return self.inner.forward(x)

    def adjoint(self, g):
        self._add(g.shape[0])
        return self.inner.adjoint(g)

    def local_grads(self, g, x):
        self._add(g.shape[0])  # the weight-gradient map (the bias's is a mean of g)
        return self.inner.local_grads(g, x)

    def frozen(self):
        return _CountingMap(self.inner.frozen(), self.tally)


class _Watch:
    """A hook: its presence makes the engine step a PCState (the dense schedule)."""

    def on_step(self, engine, s, k):
        pass


@pytest.mark.parametrize("mode, tau_w, path", [
    ("supervised", math.inf, "stepped"), ("supervised", 1.0, "stepped"),
    ("generative", math.inf, "stepped"), ("supervised", math.inf, "fast"),
    ("generative", math.inf, "fast")])
def test_engine_executes_exactly_the_analytic_count(mode, tau_w, path):
    """Counting every map call of one train_batch gives batch * pc_train_cost exactly:
    the dense schedule when stepping a PCState, the wavefront schedule on the fast path."""
    net = make_network([6, 5, 4, 3], ["identity", "tanh", "tanh", "identity"], mode=mode)
    eng = TorchEngine(net, make_dynamics(dt=1e-3, tau_x=10e-3, tau_w=tau_w, n_steps=7),
                      dtype=torch.float64)
    tally = [0]
    eng.maps = [None] + [_CountingMap(m, tally) for m in eng.maps[1:]]
    batch = 9
    x0 = torch.randn(batch, 6, dtype=torch.float64)
    target = torch.randn(batch, 3, dtype=torch.float64)
    x0 = None if mode == "generative" else x0
    hooks = [_Watch()] if path == "stepped" else []
    assert eng.fast_path_applies(hooks) == (path == "fast")
    eng.train_batch(x0, target, torch.optim.SGD(eng.parameters(), lr=0.0), hooks=hooks)
    assert tally[0] == batch * pc_train_cost(net, 7, tau_w, wavefront=path == "fast").macs


def test_wavefront_cost_by_hand():
    """784-128-128-128-10 (P_1 = 100352, P_2 = P_3 = 16384, P_4 = 1280; feedforward 134400),
    supervised, T = 5.
    Dense: per step adjoints P_2 + P_3 + P_4 and forwards P_2 + P_3 + P_4 = 68096.
    Wavefront: step 1 only eps_4 is nonzero and only x_3 moves: adjoint P_4, forward P_4;
    step 2 x_2, x_3 move: adjoints P_3 + P_4, forwards P_3 + P_4; steps 3-5 as dense.
    Saved: (P_2 + P_3) * 2 + P_2 * 2 = 98304 MACs per sample."""
    net = make_network([784, 128, 128, 128, 10], ["identity", "gelu", "gelu", "gelu", "identity"])
    dense, wave = pc_train_cost(net, 5), pc_train_cost(net, 5, wavefront=True)
    assert dense.inference_macs == 134400 + 5 * 68096
    assert dense.inference_macs - wave.inference_macs == 98304
    assert wave.learning_macs == dense.learning_macs == 134400
    for T in (3, 20):  # from step L - 1 = 3 on, every step is dense
        assert (pc_train_cost(net, T).inference_macs
                - pc_train_cost(net, T, wavefront=True).inference_macs) == 98304
    with pytest.raises(ValueError, match="tau_w"):
        pc_train_cost(net, 5, tau_w=1.0, wavefront=True)


def test_wavefront_schedule():
    """Supervised L = 4: the errors reach one layer further down each step; generative
    (free x_0 as well) the bottom moves from the first step."""
    sup = inference_wavefront((True, False, False, False, True), 4)
    assert [moved for _, moved in sup] == [
        [False, False, False, True, False], [False, False, True, True, False],
        [False, True, True, True, False], [False, True, True, True, False]]
    assert [err for err, _ in sup][:3] == [
        [False, False, False, False, True], [False, False, False, True, True],
        [False, False, True, True, True]]
    gen = inference_wavefront((False, False, False, True), 2)
    assert [moved for _, moved in gen] == [[True, False, True, False], [True, True, True, False]]
