"""Transposed convolutions (a decoder's upsampling, generative mode): adjoint, local
weight gradients, exact op counts, and every engine path on a deconvolutional decoder."""

import pytest
import torch

from pcsim.config import config_from_dict
from pcsim.engines.torch.dynamics import free_energy
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.conv import ConvTranspose2dMap
from pcsim.engines.torch.maps import build_maps
from pcsim.engines.torch.params import ParamStore
from pcsim.model import Network
from pcsim.model.costs import pc_train_cost
from pcsim.model.projections import ConvTranspose2d, ShapeError, conv_transpose_out
from pcsim.monitors import OpCounter
from tests.conftest import ROUNDOFF, assert_close
from tests.engines.test_conv import _CountingMap

F64 = torch.float64


def decoder_config(n_steps=6, **extra):
    """Generative: latent 3x3x3 -convT k3 s2 p1 op1-> 4x6x6 -convT k4 s2 p1-> 2x12x12;
    the image is clamped to the top, the latent is free under its prior."""
    return config_from_dict({
        "network": {"mode": "generative", "prec_0": 0.5, "layers": [
            {"shape": [3, 3, 3]},
            {"shape": [4, 6, 6], "activation": "tanh",
             "projection": {"kind": "conv_transpose2d", "kernel": 3, "stride": 2,
                            "padding": 1, "output_padding": 1}},
            {"shape": [2, 12, 12], "activation": "sigmoid",
             "projection": {"kind": "conv_transpose2d", "kernel": 4, "stride": 2,
                            "padding": 1}}]},
        "dynamics": {"n_steps": n_steps, "dt": "1 ms", "tau_x": "10 ms"},
        "data": {"target": "image"},
        "run": {"dtype": "float64", "device": "cpu"}, **extra})


def decoder(seed=0, **kw):
    config = decoder_config(**kw)
    return TorchEngine(Network.from_config(config.network), config.dynamics, dtype=F64,
                       seed=seed, events=config.events)


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2 * 12 * 12, generator=g, dtype=F64)


@pytest.mark.parametrize("size,kernel,stride,padding,op", [
    (4, 3, 1, 1, 0), (3, 3, 2, 1, 1), (5, 4, 2, 1, 0), (3, 5, 3, 2, 2), (6, 2, 2, 0, 0)])
def test_conv_transpose_adjoint_and_fan_out(size, kernel, stride, padding, op):
    """<W x, v> = <x, W^T v> to float64 round-off; every input neuron's fan-out (and every
    output neuron's fan-in) sums to the MACs of one evaluation."""
    out = conv_transpose_out(size, kernel, stride, padding, op)
    p = ConvTranspose2d(1, (2, size, size), (3, out, out), kernel, stride, padding, op)
    g = torch.Generator().manual_seed(size + 7 * stride)
    m = ConvTranspose2dMap(p, {"W": torch.randn(*p.tensors["W"], generator=g, dtype=F64),
                               "b": torch.zeros(3, dtype=F64)})
    x = torch.randn(4, *p.pre_shape, generator=g, dtype=F64)
    v = torch.randn(4, *p.out_shape, generator=g, dtype=F64)
    assert m.linear(x).shape == v.shape and m.adjoint(v).shape == x.shape
    assert_close((m.linear(x) * v).sum(), (x * m.adjoint(v)).sum(), atol=1e-11)
    assert int(m.fan_out().sum()) == int(m.fan_in().sum()) == p.macs


def test_conv_transpose_op_counts_are_hand_computed_integers():
    """convT 1 (3x3x3 -> 4x6x6, k 3, s 2, p 1, output_padding 1): input position i feeds
    outputs 2i - 1 + t, t = 0..2; inside 0..5: i = 0 loses t = 0 (2 taps), i = 1, 2 keep 3:
    8 pairs per axis, 64 per channel pair, times 3 * 4 = 768 MACs; gradient
    3 * 4 * 9 * 3 * 3 = 972. convT 2 (4x6x6 -> 2x12x12, k 4, s 2, p 1): outputs 2i - 1 + t,
    t = 0..3; i = 0 and i = 5 lose one tap each: 6 * 4 - 2 = 22 per axis, 484 per channel
    pair, times 4 * 2 = 3872 MACs; gradient 4 * 2 * 16 * 36 = 4608."""
    c1, c2 = Network.from_config(decoder_config().network).projections
    assert (c1.macs, c1.grad_macs, c1.n_synapses) == (768, 972, 108)
    assert (c2.macs, c2.grad_macs, c2.n_synapses) == (3872, 4608, 128)


def test_local_gradients_are_minus_dE_dtheta():
    """The correlation of x with g (no autograd) equals -dE/dtheta by autograd at the
    relaxed state of the generative decoder."""
    eng = decoder(seed=1, n_steps=10)
    net = eng.network
    s = eng.init_state(None, _images())
    eng.infer(s)
    local = eng.local_gradients(s)
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in eng.params.items()}
    maps = build_maps(net, ParamStore(net, leaves))
    mu = [None] + [eng.activations[l].f(maps[l].forward(s.x[l - 1]), torch) for l in (1, 2)]
    energy = free_energy(s.x, mu, eng.prec, s.clamped, 0.5).mean()
    auto = dict(zip(leaves, torch.autograd.grad(energy, list(leaves.values()))))
    assert set(local) == set(leaves)
    for name in leaves:
        assert_close(local[name], -auto[name], atol=1e-12, what=name)


@pytest.mark.parametrize("fast", [False, True])
def test_analytic_count_equals_every_map_call(fast):
    eng = decoder(n_steps=5)
    tally = [0]
    eng.maps = [None] + [_CountingMap(m, tally) for m in eng.maps[1:]]

    class Watch:
        def on_step(self, engine, s, k):
            pass

    hooks = [] if fast else [Watch()]
    assert eng.fast_path_applies(hooks) == fast
    eng.train_batch(None, _images(3), torch.optim.SGD(eng.parameters(), lr=0.0), hooks=hooks)
    assert tally[0] == 3 * pc_train_cost(eng.network, 5, wavefront=fast).macs


def test_fast_path_equals_stepped_path():
    fast, stepped = decoder(), decoder()
    y = _images()
    opt_f = torch.optim.SGD(fast.parameters(), lr=0.1)
    opt_s = torch.optim.SGD(stepped.parameters(), lr=0.1)

    class Watch:
        def on_step(self, engine, s, k):
            pass

    for _ in range(2):
        rf = fast.train_batch(None, y, opt_f)
        rs = stepped.train_batch(None, y, opt_s, hooks=[Watch()])
        assert_close(rf.energy_final, rs.energy_final, atol=ROUNDOFF)
    for name, t in stepped.params.items():
        assert_close(fast.params[name], t, atol=ROUNDOFF, what=name)


def test_event_mode_at_theta_zero_equals_dense():
    """Sigma-delta links through transposed convolutions at theta = 0 (a supervised net
    with an upsampling stack: event mode in generative mode is issue 18's) give the
    dense states and gradients."""
    layers = decoder_config().model_dump()["network"]["layers"] + [
        {"size": 5, "activation": "identity"}]
    for layer in layers:
        layer.pop("size", None) if "shape" in layer and layer.get("shape") else None

    def engine(events):
        config = config_from_dict({"network": {"layers": layers},
                                   "dynamics": {"n_steps": 6, "dt": "1 ms", "tau_x": "10 ms"},
                                   "events": events})
        return TorchEngine(Network.from_config(config.network), config.dynamics, dtype=F64,
                           seed=3, events=config.events)
    dense, event = engine({"enabled": False}), engine({"enabled": True, "theta": 0.0})
    event.recorder = OpCounter()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 27, generator=g, dtype=F64), torch.randn(4, 5, generator=g, dtype=F64)
    sd, se = dense.init_state(x, y), event.init_state(x, y)
    # at the feedforward start every input neuron sends once: convT 1's dense MACs
    assert event.recorder.result().total("syn_ops_mac", target="W_1") == 4 * 768
    dense.infer(sd)
    event.infer(se)
    for l in range(4):
        assert_close(se.x[l], sd.x[l], atol=1e-10, what=f"x_{l}")
    gd, ge = dense.local_gradients(sd), event.local_gradients(se)
    for name in gd:
        assert_close(ge[name], gd[name], atol=1e-10, what=name)


def test_decoder_learns_to_reconstruct():
    """Training the decoder lowers the free energy left after inference (prediction
    error plus prior) on held-out images of the same structured distribution."""
    g = torch.Generator().manual_seed(9)
    basis = torch.rand(4, 2 * 12 * 12, generator=g, dtype=F64)
    def draw(n):
        return (torch.rand(n, 4, generator=g, dtype=F64) @ basis / 2).clamp(0, 1)
    eng = decoder(n_steps=20)
    opt = torch.optim.Adam(eng.parameters(), lr=1e-2)
    test = draw(32)

    def error():  # the free energy left after encoding the test images (inference)
        s = eng.init_state(None, test)
        eng.infer(s)
        return float(eng.energy(s).mean())
    before = error()
    for _ in range(150):
        eng.train_batch(None, draw(32), opt)
    after = error()  # 5.39 -> 2.16 when written
    assert after < 0.45 * before


@pytest.mark.parametrize("change,message", [
    ({"shape": [4, 7, 7]}, r"layers\[1\].*shape \(3, 3, 3\) to \(4, 6, 6\), but layer 1 "
                           r"has shape \(4, 7, 7\)"),
    ({"projection": {"kind": "conv_transpose2d", "kernel": 3, "stride": 2, "padding": 1,
                     "output_padding": 2}}, r"output_padding 2 must be below the stride 2"),
])
def test_bad_geometry_names_the_layer_and_both_shapes(change, message):
    layers = decoder_config().model_dump()["network"]["layers"]
    layers[1].pop("size")
    layers[1].update(change)
    config = config_from_dict({"network": {"mode": "generative", "layers": layers},
                               "data": {"target": "image"}})
    with pytest.raises(ShapeError, match=message):
        Network.from_config(config.network)


def test_pooling_on_a_transposed_convolution_is_refused():
    from pcsim.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="conv_transpose2d projection has no "
                                                        "pooling"):
        config_from_dict({"network": {"layers": [
            {"shape": [1, 2, 2]}, {"shape": [1, 4, 4], "projection": {
                "kind": "conv_transpose2d", "kernel": 2, "stride": 2, "pool": "avg"}}]}})


def test_deconv_autoencoder_run_writes_mse_and_reconstructions(mnist_root, tmp_path):
    """``pcsim run networks/mnist_pc_deconv.yaml`` end to end on a slice of MNIST: the
    (1, 28, 28) top layer is read flat against the data (this failed with a shape error
    before), the MSE falls from epoch 1 to 2, and the reconstructions are drawn."""
    import json

    from pcsim.cli import main
    from tests.conftest import REPO
    assert main(["run", str(REPO / "networks" / "mnist_pc_deconv.yaml"), "--data-root",
                 str(mnist_root), "--out", str(tmp_path), "--set", "run.name=dc", "--epochs",
                 "2", "--set", "data.limit_train=600", "--set", "data.limit_test=200",
                 "--set", "dynamics.n_steps=10", "--set", "run.threads=1",
                 "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "dc" / "metrics.json").read_text())
    assert 0 < metrics[1]["test_mse"] < metrics[0]["test_mse"] < 0.25
    assert (tmp_path / "dc" / "reconstructions.png").stat().st_size > 1000
