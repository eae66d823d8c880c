"""brian2 and torch integrate the same equations: trajectories and learned weights agree
step by step (float64), for several activations, clamped and free layers, leaky and
instantaneous error neurons, and continuous plasticity."""

import numpy as np
import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from tests.conftest import assert_close, make_dynamics, make_network, pairs

pytest.importorskip("brian2")
from pcsim.engines.brian2.engine import Brian2Engine  # noqa: E402

pytestmark = pytest.mark.brian2

#: Both engines evaluate the same float64 expressions in a possibly different operation
#: order: differences stay at a few ulps of O(1) values over a dozen steps.
TOL = 1e-12


def _pair(sizes, acts, dyn, seed=0, weight_decay=0.0, prec=None, mode="supervised"):
    net = make_network(sizes, acts, prec=prec, mode=mode)
    torch_engine = TorchEngine(net, dyn, dtype=torch.float64, seed=seed, weight_decay=weight_decay)
    with torch.no_grad():
        for _, b in pairs(torch_engine.params):
            b.normal_(0, 0.3)
    params = [(w.numpy().copy(), b.numpy().copy()) for w, b in pairs(torch_engine.params)]
    return torch_engine, Brian2Engine(net, dyn, params, weight_decay=weight_decay)


def _compare(torch_engine, traj, x0, target, phase, n_steps):
    s = torch_engine.init_state(torch.tensor(x0), None if target is None else torch.tensor(target),
                                phase=phase)
    L = torch_engine.L
    for k in range(n_steps + 1):
        for l in range(L + 1):
            assert_close(traj.x[l][k], s.x[l], atol=TOL, what=f"x_{l} at step {k}")
            if l >= 1:
                assert_close(traj.eps[l][k], s.eps[l], atol=TOL, what=f"eps_{l} at step {k}")
                assert_close(traj.g[l][k], s.g[l], atol=TOL, what=f"g_{l} at step {k}")
        if k < n_steps:
            torch_engine.step(s)
    return s


@pytest.mark.parametrize("acts, tau_eps, phase", [
    (["identity", "tanh", "sigmoid", "identity"], 0.0, "train"),
    (["identity", "relu", "leaky_relu", "tanh"], 0.0, "train"),
    (["identity", "tanh", "tanh", "identity"], 5e-3, "train"),
    (["identity", "sigmoid", "tanh", "identity"], 5e-3, "test"),  # top layer free
])
def test_trajectories_agree(acts, tau_eps, phase):
    dyn = make_dynamics(dt=0.5e-3, tau_x=10e-3, tau_eps=tau_eps, n_steps=12)
    torch_engine, brian = _pair([5, 6, 4, 3], acts, dyn, prec=[1.0, 1.0, 0.7, 1.4])
    rng = np.random.default_rng(1)
    x0, target = rng.normal(size=(3, 5)), rng.normal(size=(3, 3))
    traj = brian.run(x0, target if phase == "train" else None, phase=phase)
    _compare(torch_engine, traj, x0, target if phase == "train" else None, phase, 12)


def test_generative_free_bottom_layer_agrees():
    """Generative mode: x_0 is free under its Gaussian prior, x_L clamped to the data."""
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=10)
    torch_engine, brian = _pair([3, 5, 4], ["identity", "tanh", "identity"], dyn,
                                mode="generative")
    rng = np.random.default_rng(2)
    x0, data = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    traj = brian.run(x0, data, phase="train")
    _compare(torch_engine, traj, x0, data, "train", 10)


def test_continuous_plasticity_agrees():
    """Finite tau_w: weights move at every step by dt/tau_w (g x^T - lambda W) in both
    engines (brian2: a clock-driven synaptic equation), with the same trajectories."""
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, tau_w=0.2, n_steps=15)
    torch_engine, brian = _pair([4, 5, 3], ["identity", "tanh", "identity"], dyn,
                                weight_decay=0.05)
    rng = np.random.default_rng(3)
    x0, target = rng.normal(size=(1, 4)), rng.normal(size=(1, 3))
    w_start = [w.clone() for w, _ in pairs(torch_engine.params)]
    traj = brian.run(x0, target)
    _compare(torch_engine, traj, x0, target, "train", 15)
    for l, (w, _) in enumerate(pairs(torch_engine.params)):
        assert_close(traj.weights[l], w, atol=TOL, what=f"W_{l + 1}")
        assert_close(traj.biases[l], pairs(torch_engine.params)[l][1], atol=TOL, what=f"b_{l + 1}")
        assert float((w - w_start[l]).abs().max()) > 1e-4  # the weights did move


def test_discrete_learning_step_from_brian2_states_agrees():
    """The two-phase cycle: the learning step on brian2's final state (the projection's
    local weight-gradient map, batch mean) equals torch's learning step."""
    from pcsim.engines.brian2.trainer import Brian2Trainer

    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=8)
    torch_engine, brian = _pair([4, 6, 3], ["identity", "tanh", "identity"], dyn)
    trainer = Brian2Trainer(brian.network, dyn)
    trainer.load_state_dict(torch_engine.state_dict())
    rng = np.random.default_rng(4)
    x0, target = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    traj = brian.run(x0, target)
    grads_brian = trainer.local_gradients(traj)
    s = torch_engine.init_state(torch.tensor(x0), torch.tensor(target))
    torch_engine.infer(s)
    for (dw_b, db_b), (dw_t, db_t) in zip(pairs(grads_brian), pairs(torch_engine.local_gradients(s))):
        assert_close(dw_b, dw_t, atol=TOL)
        assert_close(db_b, db_t, atol=TOL)


def test_plastic_batch_is_refused():
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, tau_w=0.2, n_steps=3)
    _, brian = _pair([2, 3], ["identity", "tanh"], dyn)
    with pytest.raises(ValueError, match="one sample per run"):
        brian.run(np.zeros((2, 2)), np.zeros((2, 3)))


def test_pcsim_run_on_both_backends_learns_the_same_weights(mnist_root, tmp_path):
    """networks/mnist_brian2.yaml, shrunk (784-16-10, T = 5, 100 images, 1 epoch):
    `pcsim run` with brian2 and with torch end with the same weights (float64, Adam on
    the same local gradients) and the same test accuracy."""
    from pcsim.cli import main
    from tests.conftest import REPO
    small = ["--set", "network.layers.1.size=16", "--set", "dynamics.n_steps=5",
             "--set", "data.limit_train=100", "--set", "data.limit_test=300",
             "--set", "learning.epochs=1", "--no-progress", "--data-root", str(mnist_root),
             "--out", str(tmp_path)]
    for backend in ("brian2", "torch"):
        assert main(["run", str(REPO / "networks" / "mnist_brian2.yaml"), "--backend", backend,
                     "--set", f"run.name={backend}", *small]) == 0
    ckpt = {b: torch.load(tmp_path / b / "checkpoint.pt", weights_only=True)
            for b in ("brian2", "torch")}
    for l in (1, 2):
        w_b, w_t = (ckpt[b]["params"]["tensors"][f"W_{l}"] for b in ("brian2", "torch"))
        assert_close(w_b, w_t, atol=1e-9)  # Adam divides by sqrt(v): round-off grows a little
    import json
    acc = [json.loads((tmp_path / b / "metrics.json").read_text())[0]["test_accuracy"]
           for b in ("brian2", "torch")]
    assert acc[0] == acc[1]


def test_brian2_refuses_what_it_cannot_run(tmp_path):
    from pcsim.config import load_config
    from pcsim.training import check_trainer
    from tests.conftest import REPO
    for override, message in (({"events.enabled": True}, "event mode runs on the torch"),
                              ({"run.dtype": "float32"}, "float64"),
                              ({"learning.rule": "bp"}, "runs on the torch backend")):
        with pytest.raises(ValueError, match=message):
            check_trainer(load_config(REPO / "networks" / "mnist_brian2.yaml", override))


def test_brian2_traces_equal_torch_traces(tmp_path):
    """The same trace recording on both backends: identical layout, and values, errors
    and per-layer energies equal to round-off."""
    import h5py

    from pcsim.config import config_from_dict
    from pcsim.data import Dataset
    from pcsim.experiment import build_trainer, record_traces
    from pcsim.model import Network
    from tests.conftest import REPO

    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    data = Dataset("toy", x, y, x, y, 3, REPO)
    files = {}
    for backend in ("brian2", "torch"):
        config = config_from_dict({
            "network": {"layers": [{"size": 5}, {"size": 4, "activation": "tanh"}, {"size": 3}]},
            "dynamics": {"tau_x": "10 ms", "tau_eps": "10 ms", "dt": "1 ms", "n_steps": 8},
            "traces": {"enabled": True, "samples": 6, "every": 2, "batch_size": 4},
            "run": {"backend": backend, "dtype": "float64", "device": "cpu"}})
        trainer = build_trainer(config, Network.from_config(config.network), torch.device("cpu"))
        files[backend] = record_traces(trainer, data, config, tmp_path / f"{backend}.h5", 1)
    with h5py.File(files["brian2"], "r") as fb, h5py.File(files["torch"], "r") as ft:
        for name in ("value_l1", "error_l1", "error_l2", "value_l2"):
            assert_close(fb[f"report/{name}/data"][:], ft[f"report/{name}/data"][:], atol=1e-6)
        assert_close(fb["pcsim/energy"][:], ft["pcsim/energy"][:], atol=1e-12)
        assert (fb["pcsim/trials"][:] == ft["pcsim/trials"][:]).all()


@pytest.mark.slow
def test_cython_target_agrees_with_numpy_target():
    """brian2's cython code generation (compiles on first use, 25-70 s, cached in the home
    folder) integrates the same trajectories as its numpy target."""
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, tau_eps=10e-3, n_steps=6)
    _, numpy_engine = _pair([4, 5, 3], ["identity", "tanh", "identity"], dyn)
    cython_engine = Brian2Engine(numpy_engine.network, dyn, numpy_engine.params, target="cython")
    rng = np.random.default_rng(6)
    x0, target = rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    a, b = numpy_engine.run(x0, target), cython_engine.run(x0, target)
    for l in range(3):
        assert_close(b.x[l], a.x[l], atol=TOL)
