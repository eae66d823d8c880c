"""A new projection kind and a new learned per-layer parameter, written in this file alone.

The toy kind is a diagonal projection (one weight per neuron, ``a = w * x + b``); the
toy parameter is a learned log-precision per layer (``prec = exp(theta)``). Each is one
descriptor and one torch class, registered here; nothing in ``pcsim/`` names them, and
the engine trains with them on every path: stepped, fast, event-driven, counted,
checkpointed.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from pcsim.config.schema import EventsConfig
from pcsim.engines.torch import maps, params, precisions
from pcsim.engines.torch.dynamics import free_energy
from pcsim.engines.torch.engine import TorchEngine
from pcsim.model import Layer, Network, get_activation
from pcsim.model.projections import Dense
from pcsim.monitors import OpCounter
from tests.conftest import ROUNDOFF, assert_close, make_dynamics


@dataclass(frozen=True)
class Diagonal:
    """Descriptor: layer ``l`` has the shape of layer ``l - 1``; ``n`` synapses."""

    kind: ClassVar[str] = "toy_diagonal"
    index: int
    pre_shape: tuple
    post_shape: tuple

    @property
    def n_pre(self):
        return math.prod(self.pre_shape)

    n_post = n_pre
    n_synapses = n_pre
    macs = n_pre

    @property
    def out_shape(self):
        return self.post_shape

    @property
    def tensors(self):
        return {"W": (self.n_post,), "b": (self.n_post,)}

    @property
    def fans(self):
        return 1, 1


class DiagonalMap(maps.ProjectionMap):
    kind = "toy_diagonal"

    @classmethod
    def init_tensors(cls, projection, init, generator):
        n = projection.n_post
        return {"W": 0.5 + torch.rand(n, generator=generator, dtype=torch.float64),
                "b": torch.zeros(n, dtype=torch.float64)}

    def forward(self, x):
        return self.tensors["W"] * x + self.tensors["b"]

    def linear(self, x):
        return self.tensors["W"] * x

    def with_bias(self, u):
        return u + self.tensors["b"]

    def adjoint(self, g):
        return self.tensors["W"] * g

    def local_grads(self, g, x_pre):
        return {"W": (g * x_pre).mean(0), "b": g.mean(0)}

    def fan_out(self):
        return (self.tensors["W"] != 0).to(self.tensors["W"].dtype)

    fan_in = fan_out

    def reached(self, mask, adjoint=False):
        return mask & (self.tensors["W"] != 0)


@dataclass(frozen=True)
class LogPrecision:
    """Descriptor of the toy learned parameter (its kind names the torch class)."""

    kind: ClassVar[str] = "toy_log_prec"


class LogPrecisionTorch(precisions.LearnedPrecision):
    """``prec = exp(theta)``, one ``theta`` per layer; ``E_l`` holds
    ``0.5 e^theta ||x - mu||^2 - 0.5 n theta``, so ``-dE/dtheta`` is
    ``0.5 n - 0.5 e^theta ||x - mu||^2`` (batch mean)."""

    kind = "toy_log_prec"

    @classmethod
    def init_tensors(cls, layer):
        return {"log_prec": torch.tensor(math.log(layer.prec), dtype=torch.float64)}

    def value(self):
        return self.tensors["log_prec"].exp()

    def local_grads(self, x, mu):
        sq = ((x - mu) ** 2).flatten(1).sum(1)
        return {"log_prec": (0.5 * self.layer.size - 0.5 * self.value() * sq).mean()}


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    monkeypatch.setitem(maps.MAPS, DiagonalMap.kind, DiagonalMap)
    monkeypatch.setitem(precisions.PRECISIONS, LogPrecisionTorch.kind, LogPrecisionTorch)


def toy_network(mode="supervised"):
    """6 -dense-> 5 -diagonal-> 5 -dense-> 3, tanh, a learned log-precision on layers 2, 3."""
    act = [get_activation(a) for a in ("identity", "tanh", "tanh", "identity")]
    shapes = [(6,), (5,), (5,), (3,)]
    learned = [None, None, LogPrecision(), LogPrecision()]
    layers = tuple(Layer(l, shapes[l], act[l], 1.0, learned[l]) for l in range(4))
    projections = (Dense(1, (6,), (5,)), Diagonal(2, (5,), (5,)), Dense(3, (5,), (3,)))
    return Network(layers, projections, mode=mode)


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.tanh(x[:, :3]) + 0.3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, y


def test_store_names_every_tensor_in_optimizer_order():
    eng = TorchEngine(toy_network(), make_dynamics(n_steps=5), dtype=torch.float64)
    assert list(eng.params) == ["W_1", "b_1", "W_2", "b_2", "W_3", "b_3",
                                "log_prec_2", "log_prec_3"]
    assert eng.params["W_2"].shape == (5,)
    assert [t.data_ptr() for t in eng.parameters()] == [t.data_ptr() for _, t in eng.params.items()]


def test_local_gradients_are_the_exact_partial_derivatives_of_E():
    """After inference, every local gradient (dense, diagonal, log-precision) equals
    -dE/dtheta from autograd through the energy with the activity held fixed."""
    eng = TorchEngine(toy_network(), make_dynamics(n_steps=6), dtype=torch.float64)
    with torch.no_grad():
        eng.params["log_prec_3"].fill_(0.4)
    x, y = _data()
    s = eng.init_state(x, y)
    eng.infer(s)
    local = eng.local_gradients(s)
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in eng.params.items()}
    store = params.ParamStore(eng.network, leaves)
    m = maps.build_maps(eng.network, store)
    prec = [1.0, 1.0] + [p.value() for p in precisions.build_precisions(eng.network, store)[2:]]
    mu = [None] + [eng.activations[l].f(m[l].forward(s.x[l - 1]), torch) for l in (1, 2, 3)]
    energy = free_energy(s.x, mu, prec, s.clamped, 1.0).mean()
    auto = dict(zip(leaves, torch.autograd.grad(energy, list(leaves.values()))))
    assert list(local) == list(leaves)
    for name in leaves:
        assert_close(local[name], -auto[name], atol=1e-12, what=name)


def test_fast_path_equals_stepped_path():
    """The wavefront (fast) and the dense schedule give the same gradients and energies."""
    dyn = make_dynamics(n_steps=7)
    fast = TorchEngine(toy_network(), dyn, dtype=torch.float64)
    stepped = TorchEngine(toy_network(), dyn, dtype=torch.float64, params=fast.params.clone())
    x, y = _data()
    descent, e0, e1 = fast._fast.descent(x, y)
    s = stepped.init_state(x, y)
    stepped.infer(s)
    assert_close(e1, stepped.energy(s).mean(), atol=ROUNDOFF)
    for name, g in stepped.local_gradients(s).items():
        assert_close(descent[name], -g, atol=ROUNDOFF, what=name)


def test_event_mode_at_theta_zero_equals_dense():
    """Sigma-delta links through the toy map at theta = 0 reproduce the dense states, and
    count one synaptic op per event through a nonzero diagonal weight."""
    dyn = make_dynamics(n_steps=6)
    dense = TorchEngine(toy_network(), dyn, dtype=torch.float64)
    event = TorchEngine(toy_network(), dyn, dtype=torch.float64, params=dense.params.clone(),
                        events=EventsConfig(enabled=True, theta=0.0))
    counter = OpCounter()
    event.recorder = counter
    x, y = _data()
    sd, se = dense.init_state(x, y), event.init_state(x, y)
    dense.infer(sd)
    event.infer(se)
    for l in range(4):
        assert_close(se.x[l], sd.x[l], atol=1e-12, what=f"x_{l}")
    sent = se.links.forward[2].coder.sent
    assert_close(sent, sd.x[1], atol=1e-12)
    counts = counter.result()
    events = counts.total("syn_events", target="W_2")
    # theta = 0: all 5 value neurons of layer 1 send, for 12 samples, at the start and in
    # steps 2..6 (in step 1 no error has reached them yet, so x_1 does not change)
    assert events == 12 * 5 * 6
    assert counts.total("syn_ops_mac", target="W_2") == events  # one nonzero weight each


def test_training_learns_the_precision_of_its_residual():
    """Trained with SGD (fast path), the energy falls; at the end the learned precision of
    the output layer is the inverse mean squared residual per neuron, the stationary
    point of its local rule, to 2%."""
    eng = TorchEngine(toy_network(), make_dynamics(n_steps=8), dtype=torch.float64)
    opt = torch.optim.SGD(eng.parameters(), lr=0.05)
    x, y = _data(n=64, seed=1)
    first = float(eng.train_batch(x, y, opt).energy_final)
    for _ in range(400):
        last = float(eng.train_batch(x, y, opt).energy_final)
    assert last < first - 1.0, (first, last)
    s = eng.init_state(x, y)
    eng.infer(s)
    residual = float(((s.x[3] - s.mu[3]) ** 2).sum(1).mean()) / 3
    assert_close(eng.prec[3], torch.tensor(1 / residual, dtype=torch.float64), atol=0,
                 rtol=0.02, what="prec_3")
    assert float(eng.params["W_2"].abs().min()) > 0


def test_checkpoint_round_trip_keeps_every_tensor(tmp_path):
    eng = TorchEngine(toy_network(), make_dynamics(n_steps=4), dtype=torch.float64)
    opt = torch.optim.Adam(eng.parameters(), lr=1e-2)
    x, y = _data()
    for _ in range(3):
        eng.train_batch(x, y, opt)
    torch.save(eng.state_dict(), tmp_path / "p.pt")
    fresh = TorchEngine(toy_network(), make_dynamics(n_steps=4), dtype=torch.float64, seed=9)
    fresh.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    for name, t in eng.params.items():
        assert torch.equal(fresh.params[name], t), name
    assert torch.equal(fresh.predict(x), eng.predict(x))
    with pytest.raises(ValueError, match="log_prec_3"):
        TorchEngine(Network(toy_network().layers[:3], toy_network().projections[:2]),
                    make_dynamics(n_steps=4)).load_state_dict(eng.state_dict())
