"""Convolutional projections and pooling (SPEC 1): adjoints, local weight gradients,
the link to backprop, every path of the engine, and exact op counts."""

import pytest
import torch

from pcsim.config import config_from_dict
from pcsim.engines.torch.backprop import BackpropTrainer
from pcsim.engines.torch.dynamics import free_energy
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.conv import AvgPool, Conv2dMap, MaxPool
from pcsim.engines.torch.maps import build_maps
from pcsim.engines.torch.params import ParamStore
from pcsim.model import Network
from pcsim.model.costs import pc_train_cost
from pcsim.model.projections import Conv2d, ShapeError, conv_out
from pcsim.monitors import OpCounter
from tests.conftest import ROUNDOFF, assert_close

F64 = torch.float64


def conv_config(pool="avg", prec_top=1.0, n_steps=6, **extra):
    """3x8x8 -conv3 pad1 + pool-> 4x4x4 -conv3 stride2 pad1-> 5x2x2 -dense-> 10."""
    return config_from_dict({
        "network": {"layers": [
            {"shape": [3, 8, 8]},
            {"shape": [4, 4, 4], "activation": "tanh",
             "projection": {"kind": "conv2d", "kernel": 3, "padding": 1, "pool": pool}},
            {"shape": [5, 2, 2], "activation": "gelu",
             "projection": {"kind": "conv2d", "kernel": 3, "stride": 2, "padding": 1}},
            {"size": 10, "prec": prec_top}]},
        "dynamics": {"n_steps": n_steps, "dt": "1 ms", "tau_x": "10 ms"},
        "run": {"dtype": "float64", "device": "cpu"}, **extra})


def conv_engine(pool="avg", seed=0, **kw):
    config = conv_config(pool, **kw)
    net = Network.from_config(config.network)
    return TorchEngine(net, config.dynamics, dtype=F64, seed=seed, events=config.events)


def _batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3 * 8 * 8, generator=g, dtype=F64),
            torch.randn(n, 10, generator=g, dtype=F64))


@pytest.mark.parametrize("stride,padding,size", [(1, 0, 7), (1, 1, 8), (2, 1, 9), (3, 2, 10)])
def test_conv_adjoint(stride, padding, size):  # noqa: D103
    """<W x, v> = <x, W^T v> for the convolution and its transpose, to float64 round-off."""
    out = conv_out(size, 3, stride, padding)
    p = Conv2d(1, (2, size, size), (3, out, out), 3, stride, padding)
    g = torch.Generator().manual_seed(stride * 10 + padding)
    m = Conv2dMap(p, {"W": torch.randn(3, 2, 3, 3, generator=g, dtype=F64),
                      "b": torch.zeros(3, dtype=F64)})
    x = torch.randn(4, *p.pre_shape, generator=g, dtype=F64)
    v = torch.randn(4, *p.out_shape, generator=g, dtype=F64)
    assert m.adjoint(v).shape == x.shape
    assert_close((m.linear(x) * v).sum(), (x * m.adjoint(v)).sum(), atol=1e-11)
    # every input neuron's fan-out sums to the MACs of one evaluation
    assert int(m.fan_out().sum()) == int(m.fan_in().sum()) == p.macs


@pytest.mark.parametrize("pool", [AvgPool, MaxPool])
def test_pooling_adjoint(pool):
    """<P z, v> = <z, P^T v> (max pooling: P is linear once its winners are fixed), also
    for a size the window does not divide (the dropped edge gets no error)."""
    g = torch.Generator().manual_seed(3)
    for hw in (8, 9):
        z = torch.randn(3, 2, hw, hw, generator=g, dtype=F64)
        P = pool(2, (2, hw, hw))
        pz, route = P.forward(z)
        v = torch.randn_like(pz)
        back = P.adjoint(v, route)
        assert back.shape == z.shape
        assert_close((pz * v).sum(), (z * back).sum(), atol=1e-12)


def test_conv_op_counts_are_hand_computed_integers():
    """conv 1 (3x8x8 -> 4x8x8, k 3, pad 1): per axis 8 outputs x 3 taps = 24 pairs, of
    which the first and last output lose one tap at the border: 22; 22 * 22 = 484 pairs
    per channel pair, times 3 * 4 channel pairs = 5808 MACs. Its weight gradient is
    4 * 3 * 3 * 3 * 8 * 8 = 6912 MACs (SPEC 4). conv 2 (4x4x4 -> 5x2x2, k 3, stride 2,
    pad 1): outputs 0 and 1 see taps at inputs -1..1 and 1..3: 2 + 3 = 5 per axis, 25
    per channel pair, times 4 * 5 = 500 MACs; gradient 5 * 4 * 9 * 2 * 2 = 720."""
    net = Network.from_config(conv_config().network)
    c1, c2, d3 = net.projections
    assert (c1.macs, c1.grad_macs, c1.out_shape) == (5808, 6912, (4, 8, 8))
    assert (c2.macs, c2.grad_macs, c2.out_shape) == (500, 720, (5, 2, 2))
    assert (d3.macs, d3.n_synapses) == (200, 200)


class _CountingMap:
    """Wraps a map and adds up the MACs of every evaluation it performs."""

    def __init__(self, inner, tally):
        self.inner, self.tally = inner, tally
        self.tensors, self.decayed, self.pool = inner.tensors, inner.decayed, inner.pool

    def forward(self, x):
        self.tally[0] += x.shape[0] * self.inner.projection.macs
        return self.inner.forward(x)

    def adjoint(self, g):
        self.tally[0] += g.shape[0] * self.inner.projection.macs
        return self.inner.adjoint(g)

    def local_grads(self, g, x):
        self.tally[0] += g.shape[0] * self.inner.projection.grad_macs
        return self.inner.local_grads(g, x)

    def frozen(self):
        return _CountingMap(self.inner.frozen(), self.tally)


@pytest.mark.parametrize("fast", [False, True])
def test_analytic_count_equals_every_map_call(fast):
    eng = conv_engine(n_steps=5)
    tally = [0]
    eng.maps = [None] + [_CountingMap(m, tally) for m in eng.maps[1:]]

    class Watch:
        def on_step(self, engine, s, k):
            pass

    hooks = [] if fast else [Watch()]
    assert eng.fast_path_applies(hooks) == fast
    eng.train_batch(*_batch(7), torch.optim.SGD(eng.parameters(), lr=0.0), hooks=hooks)
    assert tally[0] == 7 * pc_train_cost(eng.network, 5, wavefront=fast).macs


@pytest.mark.parametrize("pool", ["avg", "max", "none"])
def test_local_gradients_are_minus_dE_dtheta(pool):
    """Each conv map's weight and bias gradient (the local correlation of g with x, no
    autograd) equals -dE/dtheta from autograd through E at the relaxed state."""
    config = conv_config(pool, n_steps=8)
    if pool == "none":  # no pooling: layer 1 keeps the conv's 8x8 output
        layers = config.model_dump()["network"]["layers"]
        for l, shape in ((1, [4, 8, 8]), (2, [5, 4, 4])):
            layers[l].pop("size")
            layers[l]["shape"] = shape
        config = config_from_dict({**config.model_dump(), "network": {"layers": layers}})
    net = Network.from_config(config.network)
    eng = TorchEngine(net, config.dynamics, dtype=F64, seed=1)
    x, y = _batch()
    s = eng.init_state(x, y)
    eng.infer(s)
    local = eng.local_gradients(s)
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in eng.params.items()}
    maps = build_maps(net, ParamStore(net, leaves))
    mu = [None]
    for l in range(1, 4):
        f_a = eng.activations[l].f(maps[l].forward(s.x[l - 1]), torch)
        mu.append(f_a if maps[l].pool is None else maps[l].pool.forward(f_a)[0])
    energy = free_energy(s.x, mu, eng.prec, s.clamped, 1.0).mean()
    auto = dict(zip(leaves, torch.autograd.grad(energy, list(leaves.values()))))
    for name in leaves:
        assert_close(local[name], -auto[name], atol=1e-12, what=name)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_fast_path_equals_stepped_path(pool):
    fast = conv_engine(pool)
    stepped = conv_engine(pool)
    x, y = _batch()
    descent, _, e1 = fast._fast.descent(fast._as_tensor(x, 0), fast._as_tensor(y, 3))
    s = stepped.init_state(x, y)
    stepped.infer(s)
    assert_close(e1, stepped.energy(s).mean(), atol=ROUNDOFF)
    for name, g in stepped.local_gradients(s).items():
        assert_close(descent[name], -g, atol=ROUNDOFF, what=name)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_event_mode_at_theta_zero_equals_dense(pool):
    """Sigma-delta links through convolutions and pooling at theta = 0: the same states
    and gradients as dense execution; at the feedforward start every input neuron sends
    once, so conv 1's synaptic ops are its dense MACs per sample."""
    dense = conv_engine(pool)
    event = conv_engine(pool, events={"enabled": True, "theta": 0.0})
    counter = OpCounter()
    event.recorder = counter
    x, y = _batch()
    sd, se = dense.init_state(x, y), event.init_state(x, y)
    start = counter.result().total("syn_ops_mac", target="W_1")
    assert start == 5 * 5808
    dense.infer(sd)
    event.infer(se)
    for l in range(4):
        assert_close(se.x[l], sd.x[l], atol=1e-10, what=f"x_{l}")
    gd, ge = dense.local_gradients(sd), event.local_gradients(se)
    for name in gd:
        assert_close(ge[name], gd[name], atol=1e-10, what=name)


def test_weak_output_nudging_recovers_backprop_on_a_conv_net():
    """As prec_L -> 0, the PC weight updates at equilibrium align with BP's gradients of
    the same conv net (cosine above 0.999 at prec_L = 1e-3, rising)."""
    x, y = _batch(6, seed=4)
    cosines = []
    for prec_top in (1.0, 1e-1, 1e-3):
        eng = conv_engine("avg", seed=2, prec_top=prec_top)
        bp = BackpropTrainer(Network.from_config(conv_config("avg").network), dtype=F64,
                             params=ParamStore(eng.network, {k: t.clone() for k, t in
                                                             eng.params.items()}))
        bp.loss(x, y).backward()
        ref = torch.cat([t.grad.flatten() for t in bp.parameters()])
        s = eng.init_state(x, y)
        eng.infer(s, 2000)
        pc = torch.cat([g.flatten() for g in eng.local_gradients(s).values()])
        cosines.append(float(pc @ -ref / (pc.norm() * ref.norm())))
    assert cosines[0] < cosines[1] < cosines[2], cosines
    assert cosines[-1] > 0.999, cosines


def test_bp_twin_learns_on_the_same_maps():
    """BP on the conv net runs the same maps (pooling included): the loss falls."""
    net = Network.from_config(conv_config("max").network)
    bp = BackpropTrainer(net, dtype=F64, seed=0)
    opt = torch.optim.Adam(bp.parameters(), lr=1e-2)
    x, y = _batch(16, seed=5)
    first = float(bp.train_batch(x, y, opt).energy_initial)
    for _ in range(30):
        last = float(bp.train_batch(x, y, opt).energy_initial)
    assert last < 0.5 * first


@pytest.mark.parametrize("change,message", [
    ({"shape": [4, 5, 5]}, r"layers\[1\].*shape \(3, 8, 8\) to \(4, 4, 4\), but layer 1 has "
                           r"shape \(4, 5, 5\)"),
    ({"projection": {"kind": "conv2d", "kernel": 11}}, r"layers\[1\]: kernel 11 does not fit"),
])
def test_bad_geometry_names_the_layer_and_both_shapes(change, message):
    layers = conv_config().model_dump()["network"]["layers"]
    layers[1].pop("size")
    layers[1].update(change)
    config = config_from_dict({"network": {"layers": layers}})
    with pytest.raises(ShapeError, match=message):
        Network.from_config(config.network)


def test_dense_projection_with_kernel_geometry_is_refused():
    from pcsim.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="dense projection has no kernel"):
        config_from_dict({"network": {"layers": [
            {"size": 4}, {"size": 3, "projection": {"kind": "dense", "kernel": 5}}]}})


def test_brian2_refuses_convolutions():
    pytest.importorskip("brian2")
    from pcsim.training import check_trainer
    config = conv_config(run={"backend": "brian2", "dtype": "float64", "device": "cpu"})
    with pytest.raises(ValueError, match="runs dense projections, not conv2d"):
        check_trainer(config)
