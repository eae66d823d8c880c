"""Learned precision (SPEC 2.4): the ``log_variance`` kind, its floor and guard, on every
path of the torch engine (stepped, fast, event-driven, counted, checkpointed), the YAML
fields that configure it, and the brian2 backend's learning step.

Notation: ``s = ln sigma2`` per layer, neuron or channel; ``prec = exp(-s)``; ``m`` the
number of neurons sharing a variance; ``<r^2>`` the mean squared prediction error over the
batch and those neurons. The rule is ``ds/dt * tau_prec = 0.5 (<r^2> e^{-s} - 1)``, which
is ``-dE/ds / m`` (pcsim/model/precision.py).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from pcsim.cli import main
from pcsim.config import ConfigError, config_from_dict
from pcsim.config.schema import EventsConfig, NetworkConfig
from pcsim.energy import estimate_energy, load_profile
from pcsim.engines.torch.dynamics import free_energy
from pcsim.engines.torch.engine import TorchEngine
from pcsim.model import Network
from pcsim.model.precision import LogVariance
from pcsim.monitors import OpCounter
from pcsim.training import check_trainer
from tests.conftest import REPO, ROUNDOFF, assert_close, make_dynamics

F64 = torch.float64


def _net(layers, mode="supervised"):
    return Network.from_config(NetworkConfig(mode=mode, layers=layers))


def _mlp(per1="neuron", per2="layer", **extra):
    """4 -> 5 (tanh, learned ``per1``) -> 3 (identity, learned ``per2``)."""
    return _net([{"size": 4},
                 {"size": 5, "activation": "tanh", "precision": {"per": per1, "init": 0.7, **extra}},
                 {"size": 3, "precision": {"per": per2, "init": 1.6, **extra}}])


def _conv(per="channel"):
    """(1, 6, 6) -conv 3x3-> (2, 4, 4) (tanh, learned ``per``) -dense-> 3 (learned per layer)."""
    return _net([{"shape": [1, 6, 6]},
                 {"shape": [2, 4, 4], "activation": "tanh",
                  "projection": {"kind": "conv2d", "kernel": 3},
                  "precision": {"per": per, "init": 0.8}},
                 {"size": 3, "precision": {"per": "layer", "init": 1.3}}])


def _data(shape_in=(4,), n_out=3, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape_in, generator=g, dtype=F64)
    y = torch.randn(n, n_out, generator=g, dtype=F64)
    return x, y


class _Watch:
    """A step hook that only looks: it makes the engine run the dense, stepped path."""

    def on_step(self, engine, state, step):
        pass


def _train_sgd(eng, x, y, lr, n, groups=None):
    opt = torch.optim.SGD(groups or eng.parameters(), lr=lr)
    for _ in range(n):
        eng.train_batch(x, y, opt)
    return opt


def _linear_gaussian(n, w, b, sigma2, seed):
    """``n`` samples of ``x ~ N(0, I)``, ``y = W x + b + noise``, noise ``N(0, diag(sigma2))``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, w.shape[1], generator=g, dtype=F64)
    y = x @ w.T + b + torch.randn(n, w.shape[0], generator=g, dtype=F64) * sigma2.sqrt()
    return x, y


def _ols_residual_variance(x, y):
    """Closed form: the maximum-likelihood variance of each output of ``y = W x + b +
    noise``, i.e. the mean squared residual of the least-squares fit."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=F64)], 1)
    coef = torch.linalg.lstsq(design, y).solution
    return ((y - design @ coef) ** 2).mean(0)


# ---------------------------------------------------------------------- the local rule
@pytest.mark.parametrize("per1, net", [("neuron", "mlp"), ("layer", "mlp"), ("channel", "conv"),
                                       ("neuron", "conv")])
def test_local_gradient_is_minus_dE_ds_per_sharing_neuron(per1, net):
    """After inference, the learned log-variance's local gradient equals ``-dE/ds / m``
    from autograd through ``E`` (with its ``-0.5 sum ln prec`` term) at fixed activity,
    for one variance per layer (m = n_l), per neuron (m = 1) and per channel (m = H W =
    16). A wrong m, sign, or a dropped log term breaks it."""
    network = _mlp(per1=per1) if net == "mlp" else _conv(per=per1)
    eng = TorchEngine(network, make_dynamics(n_steps=6), dtype=F64)
    with torch.no_grad():  # variances that differ per neuron/channel
        for name in ("log_sigma2_1", "log_sigma2_2"):
            t = eng.params[name]
            t.copy_(torch.linspace(-0.4, 0.5, t.numel(), dtype=F64).reshape(t.shape))
    x, y = _data(network.layers[0].shape)
    s = eng.init_state(x, y)
    eng.infer(s)
    local = eng.local_gradients(s)
    logs = {l: eng.params[f"log_sigma2_{l}"].detach().clone().requires_grad_(True) for l in (1, 2)}
    prec = [1.0] + [logs[l].neg().exp() for l in (1, 2)]
    energy = free_energy(s.x, s.mu, prec, s.clamped, 1.0).mean()
    auto = torch.autograd.grad(energy, [logs[1], logs[2]])
    for l, grad in zip((1, 2), auto):
        spec = network.layers[l].precision
        m = spec.shared_by(network.layers[l].shape)
        assert m == {"neuron": 1, "layer": network.layers[l].size, "channel": 16}[spec.per]
        assert local[f"log_sigma2_{l}"].shape == spec.param_shape(network.layers[l].shape)
        assert_close(local[f"log_sigma2_{l}"], -grad / m, atol=1e-12, what=f"log_sigma2_{l}")


def test_learned_variances_converge_to_the_true_ones_of_a_linear_gaussian_model():
    """Data from a known two-layer linear Gaussian model, ``x_1 = W x_0 + b + n``, with a
    different noise variance per neuron, ``sigma2 = (0.1, 0.2, 0.5, 1, 2, 4)``. PC
    learns ``W``, ``b`` and one variance per neuron by SGD (the discrete cycle, full
    batch). Its fixed point is the maximum-likelihood estimate: least squares for ``W``,
    ``b`` and the mean squared residual for each variance (closed form, numpy's lstsq);
    the learned variances equal it to 1e-6 (relative). That estimate is within
    4 sqrt(2 / N) (relative; the standard error of a variance estimate from N samples is
    sqrt(2 / N) sigma2) of the true variances."""
    n_samples = 3000
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    sigma2 = torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0, 4.0], dtype=F64)
    x, y = _linear_gaussian(n_samples, w, b, sigma2, seed=2)
    network = _net([{"size": 4}, {"size": 6, "precision": {"per": "neuron"}}])
    eng = TorchEngine(network, make_dynamics(n_steps=0), dtype=F64)
    _train_sgd(eng, x, y, lr=0.1, n=400)
    closed_form = _ols_residual_variance(x, y)
    learned = eng.params["log_sigma2_1"].exp()
    assert_close(learned, closed_form, atol=0, rtol=1e-6, what="sigma2 vs maximum likelihood")
    assert_close(closed_form, sigma2, atol=0, rtol=4 * math.sqrt(2 / n_samples),
                 what="maximum likelihood vs the true variances")


def test_three_layer_hierarchy_learns_each_layers_variance():
    """A three-layer linear Gaussian hierarchy ``x_0 -> x_1 -> x_2`` with one noise
    variance per layer (0.3, then 0.2), every layer observed (clamped; a latent middle
    layer makes only ``W_2^2 sigma2_1 + sigma2_2`` identifiable). The learning step on
    the engine's local gradients (W, b and both variances, SGD) converges to the
    per-layer maximum-likelihood variances (closed form: least squares of each layer on
    the one below, residual mean square over the layer), to 1e-6, and they lie within
    4 sqrt(2 / (N n_l)) of the true ones."""
    n_samples = 3000
    g = torch.Generator().manual_seed(3)
    w1, b1 = 0.5 * torch.randn(5, 4, generator=g, dtype=F64), 0.3 * torch.randn(5, generator=g, dtype=F64)
    w2, b2 = 0.5 * torch.randn(3, 5, generator=g, dtype=F64), 0.3 * torch.randn(3, generator=g, dtype=F64)
    x0, x1 = _linear_gaussian(n_samples, w1, b1, torch.full((5,), 0.3, dtype=F64), seed=4)
    gen = torch.Generator().manual_seed(5)
    x2 = x1 @ w2.T + b2 + math.sqrt(0.2) * torch.randn(n_samples, 3, generator=gen, dtype=F64)
    network = _net([{"size": 4}, {"size": 5, "precision": "log_variance"},
                    {"size": 3, "precision": "log_variance"}])
    eng = TorchEngine(network, make_dynamics(n_steps=0), dtype=F64)
    opt = torch.optim.SGD(eng.parameters(), lr=0.1)
    for _ in range(400):
        s = eng.init_state(x0, x2, clamped=(True, True, True))
        eng.assign(s, 1, x=x1)
        eng.apply_gradients(eng.local_gradients(s), opt)
    for l, (pre, post, true) in enumerate([(x0, x1, 0.3), (x1, x2, 0.2)], start=1):
        closed_form = _ols_residual_variance(pre, post).mean()
        assert_close(eng.params[f"log_sigma2_{l}"].exp(), closed_form, atol=0, rtol=1e-6,
                     what=f"sigma2_{l} vs maximum likelihood")
        n_l = post.shape[1]
        assert_close(closed_form, torch.tensor(true, dtype=F64), atol=0,
                     rtol=4 * math.sqrt(2 / (n_samples * n_l)), what=f"sigma2_{l} vs truth")


def test_continuous_precision_follows_its_ode_to_first_order():
    """With ``tau_prec`` set and every layer clamped, inference moves only the variances:
    ``tau_prec ds/dt = 0.5 (<r^2> e^{-s} - 1)`` with ``<r^2>`` fixed, whose solution is
    ``sigma2(t) = <r^2> + (sigma2(0) - <r^2>) exp(-t / (2 tau_prec))`` (closed form). The
    Euler trajectory converges to it with first order: halving dt halves the error at
    t = 40 ms (ratio in [1.8, 2.2]); after 400 ms the variances are the running second
    moment ``<r^2>`` to 1e-8 (relative)."""
    network = _net([{"size": 4},
                    {"size": 3, "precision": {"per": "neuron", "tau_prec": "10 ms", "init": 2.0}}])
    x, y = _data()
    errors = []
    for dt in (1e-3, 0.5e-3, 0.25e-3):
        eng = TorchEngine(network, make_dynamics(dt=dt, tau_x=10e-3, n_steps=round(40e-3 / dt)),
                          dtype=F64, seed=1)
        s = eng.init_state(x, y)
        m2 = ((s.x[1] - s.mu[1]) ** 2).mean(0)
        eng.infer(s)
        exact = m2 + (2.0 - m2) * math.exp(-40e-3 / (2 * 10e-3))
        errors.append(float((eng.params["log_sigma2_1"].exp() - exact).abs().max()))
        assert_close(s.eps[1], (s.x[1] - s.mu[1]) * eng.params["log_sigma2_1"].neg().exp(),
                     atol=ROUNDOFF, what="errors use the new precision")
    for coarse, fine in zip(errors, errors[1:]):
        assert 1.8 <= coarse / fine <= 2.2, errors
    s = eng.init_state(x, y)
    eng.infer(s, n_steps=round(400e-3 / 0.25e-3))
    assert_close(eng.params["log_sigma2_1"].exp(), m2, atol=0, rtol=1e-8)


# ---------------------------------------------------------------------- floor and guard
def _overshoot_setup(max_floor_share):
    """The two-layer model of the convergence test with floor 0.05 (below every true
    variance, 0.1 .. 4), weights at SGD lr 0.05, the variances at lr 10: 100x the 0.1
    at which that test converges (near the fixed point each step multiplies the error
    by 1 - 10 / 2 = -4; the iterates swing over several units of ln sigma2)."""
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    sigma2 = torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0, 4.0], dtype=F64)
    x, y = _linear_gaussian(2000, w, b, sigma2, seed=2)
    network = _net([{"size": 4}, {"size": 6, "precision": {
        "per": "neuron", "sigma2_min": 0.05, "max_floor_share": max_floor_share}}])
    eng = TorchEngine(network, make_dynamics(n_steps=0), dtype=F64)
    weights = [eng.params["W_1"], eng.params["b_1"]]
    opt = torch.optim.SGD([{"params": weights, "lr": 0.05},
                           {"params": [eng.params["log_sigma2_1"]], "lr": 10.0}])
    return eng, opt, x, y


def test_floor_holds_under_a_learning_rate_100x_too_large():
    """With the guard on the floor off (max_floor_share 1), 150 steps at 100x the right
    learning rate: every variance stays >= sigma2_min = 0.05 at every step (exactly 0.05
    when clipped, which happens in at least 20 of the 900 neuron-steps), and every energy,
    precision and tensor stays finite (the floor also bounds each upward step, which is
    ``0.5 lr <r^2> / sigma2``)."""
    eng, opt, x, y = _overshoot_setup(max_floor_share=1.0)
    floor_hits = 0
    for _ in range(150):
        out = eng.train_batch(x, y, opt)
        sigma2 = eng.params["log_sigma2_1"].exp()
        assert math.isfinite(float(out.energy_final))
        assert float(sigma2.min()) >= 0.05 * (1 - 1e-12), sigma2
        assert bool(torch.isfinite(sigma2).all() and (eng.prec[1] > 0).all()), sigma2
        floor_hits += int((sigma2 <= 0.05 * (1 + 1e-12)).sum())
    assert floor_hits >= 20  # the floor did the work
    assert all(bool(torch.isfinite(t).all()) for t in eng.params.parameters())


def test_guard_stops_at_the_floor_naming_layer_step_and_cause():
    """The same run with max_floor_share 0.1: FloatingPointError right after the first
    learning step that leaves more than 10% of layer 1's six variances (one of them, 17%)
    at the floor -- the step an unguarded run (max_floor_share 1) shows -- naming the
    layer, the step, the floor and the likely cause; the tensors are finite and on or
    above the floor."""
    eng, opt, x, y = _overshoot_setup(max_floor_share=1.0)
    first = None
    for k in range(1, 151):
        eng.train_batch(x, y, opt)
        if (eng.params["log_sigma2_1"].exp() <= 0.05 * (1 + 1e-12)).sum() >= 1:
            first = k
            break
    assert first is not None and first > 1
    eng, opt, x, y = _overshoot_setup(max_floor_share=0.1)
    with pytest.raises(FloatingPointError) as info:
        for _ in range(150):
            eng.train_batch(x, y, opt)
    message = str(info.value)
    assert f"learned precision of layer 1, after learning step {first}:" in message
    assert "17% of its 6 variance(s) sit at the floor sigma2_min = 0.05" in message
    assert "more than max_floor_share = 0.1" in message and "learning.lr" in message
    assert eng.learning_steps == first
    assert float(eng.params["log_sigma2_1"].min()) >= math.log(0.05) - 1e-15
    assert all(bool(torch.isfinite(t).all()) for t in eng.params.parameters())


def test_guard_stops_on_a_non_finite_precision_before_the_learning_step():
    """A NaN log-variance (e.g. a corrupted checkpoint) stops the next cycle before the
    learning step: FloatingPointError naming the layer, 'before learning step 3' and
    the cause; no weight moved."""
    eng = TorchEngine(_mlp(), make_dynamics(n_steps=4), dtype=F64)
    x, y = _data()
    opt = _train_sgd(eng, x, y, lr=0.05, n=2)
    with torch.no_grad():
        eng.params["log_sigma2_2"].fill_(float("nan"))
    before = {k: t.clone() for k, t in eng.params.items()}
    with pytest.raises(FloatingPointError, match=r"layer 2, before learning step 3: 1 of its "
                                                 r"1 variance\(s\) are not finite"):
        eng.train_batch(x, y, opt)
    for name, t in eng.params.items():
        if name != "log_sigma2_2":
            assert torch.equal(t, before[name]), name


def test_guard_message_names_an_inference_instability_the_floor_allows():
    """A latent layer's variance collapses (it explains its own error away) and with
    sigma2_min = 1e-4 < dt / (2 tau_x) = 0.05, precisions reach values at which Euler
    inference overshoots: the guard's message says so."""
    network = _net([{"size": 3}, {"size": 3, "precision": "log_variance"},
                    {"size": 3, "precision": "log_variance"}])
    eng = TorchEngine(network, make_dynamics(n_steps=100), dtype=F64)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(500, 3, generator=g, dtype=F64)
    x2 = 1.2 * x0 + 0.6 * torch.randn(500, 3, generator=g, dtype=F64)
    with torch.no_grad():
        eng.params["W_1"].copy_(1.5 * torch.eye(3))
        eng.params["W_2"].copy_(0.8 * torch.eye(3))
    opt = torch.optim.SGD([eng.params["log_sigma2_1"], eng.params["log_sigma2_2"]], lr=0.2)
    with pytest.raises(FloatingPointError, match=r"layer 1, .*learning step \d+.*below dt / "
                                                 r"\(2 tau_x\) = 0.05"):
        for _ in range(300):
            eng.train_batch(x0, x2, opt)


# ---------------------------------------------------------------------- path agreement
def _discrete_cycle(network, params, x0, target, n_steps, eta_x, lr):
    """SPEC 2.3 written out independently (autograd on E for dE/dx and dE/dtheta): the
    feedforward start, ``T`` steps ``x_1 <- x_1 - eta_x dE/dx_1``, then one SGD step
    ``theta <- theta - lr dE/dtheta`` for weights, ``s <- s - lr dE/ds / m`` for each
    log-variance, clipped at ``ln sigma2_min``."""
    p = {k: t.clone() for k, t in params.items()}

    def energy(x1, p):
        mu1 = torch.tanh(x0 @ p["W_1"].T + p["b_1"])
        mu2 = x1 @ p["W_2"].T + p["b_2"]
        total = 0.0
        for l, (x, mu) in enumerate([(x1, mu1), (target, mu2)], start=1):
            s = p[f"log_sigma2_{l}"]
            m = network.layers[l].precision.shared_by(network.layers[l].shape)
            total = total + (0.5 * (s.neg().exp() * (x - mu) ** 2).sum(1) + 0.5 * m * s.sum())
        return total

    x1 = torch.tanh(x0 @ p["W_1"].T + p["b_1"])
    for _ in range(n_steps):
        x1 = x1.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x1, p).sum(), [x1])
        x1 = x1 - eta_x * grad
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in p.items()}
    grads = dict(zip(leaves, torch.autograd.grad(energy(x1.detach(), leaves).mean(),
                                                 list(leaves.values()))))
    out = {}
    for name, t in p.items():
        if name.startswith("log_sigma2_"):
            l = int(name.rsplit("_", 1)[1])
            layer = network.layers[l]
            m = layer.precision.shared_by(layer.shape)
            out[name] = (t - lr * grads[name] / m).clamp(min=math.log(layer.precision.sigma2_min))
        else:
            out[name] = t - lr * grads[name]
    return out


@pytest.mark.parametrize("path", ["stepped", "fast"])
def test_euler_cycle_with_learned_precision_equals_the_discrete_update(path):
    """Forward Euler (dt / tau_x = 0.1, tau_eps = 0, tau_w = inf) for T = 7 steps, then
    the learning step, equals the discrete PC update with eta_x = 0.1 written out
    independently, to float64 round-off: every weight, bias and log-variance (per neuron,
    per layer), over 3 cycles, with a floor that clips layer 2 in the last ones."""
    network = _net([{"size": 4},
                    {"size": 5, "activation": "tanh", "precision": {"per": "neuron", "init": 0.7}},
                    {"size": 3, "precision": {"per": "layer", "init": 1.2, "sigma2_min": 1.0,
                                              "max_floor_share": 1.0}}])
    eng = TorchEngine(network, make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=7), dtype=F64)
    x, y = _data()
    y = 0.2 * y  # small output errors: layer 2's variance falls to its floor 1.0
    oracle = {k: t.clone() for k, t in eng.params.items()}
    opt = torch.optim.SGD(eng.parameters(), lr=0.3)
    hooks = [_Watch()] if path == "stepped" else []
    assert eng.fast_path_applies(hooks) == (path == "fast")
    for _ in range(3):
        eng.train_batch(x, y, opt, hooks=hooks)
        oracle = _discrete_cycle(network, oracle, x, y, 7, 0.1, 0.3)
        for name, t in eng.params.items():
            assert_close(t, oracle[name], atol=ROUNDOFF, what=name)
    assert float(eng.params["log_sigma2_2"]) == 0.0  # clipped at ln 1


def test_continuous_precision_steps_from_the_old_state():
    """With tau_prec set (tau_w = inf), each Euler step updates x and s from the same old
    state: ``x <- x - (dt/tau_x) dE/dx``, ``s <- max(s + (dt/tau_prec) rate(old), ln
    sigma2_min)``, and the errors of the new state use the new precision; written out
    step by step, equal to round-off. No optimizer sees s."""
    network = _net([{"size": 4},
                    {"size": 5, "activation": "tanh",
                     "precision": {"per": "neuron", "tau_prec": "20 ms", "init": 0.7}},
                    {"size": 3, "precision": {"per": "layer", "tau_prec": "50 ms"}}])
    eng = TorchEngine(network, make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=6), dtype=F64)
    assert not eng.fast_path_applies()
    assert [p.shape for p in eng.parameters()] == [(5, 4), (5,), (3, 5), (3,)]
    x, y = _data()
    w1, b1, w2, b2 = (eng.params[k].clone() for k in ("W_1", "b_1", "W_2", "b_2"))
    s1, s2 = eng.params["log_sigma2_1"].clone(), eng.params["log_sigma2_2"].clone()
    x1 = torch.tanh(x @ w1.T + b1)
    for _ in range(6):
        mu1, mu2 = torch.tanh(x @ w1.T + b1), x1 @ w2.T + b2
        eps1, eps2 = s1.neg().exp() * (x1 - mu1), s2.neg().exp() * (y - mu2)
        rate1 = 0.5 * (((x1 - mu1) ** 2).mean(0) * s1.neg().exp() - 1)
        rate2 = 0.5 * (((y - mu2) ** 2).mean() * s2.neg().exp() - 1)
        x1 = x1 + 0.1 * (-eps1 + eps2 @ w2)
        s1 = (s1 + 1e-3 / 20e-3 * rate1).clamp(min=math.log(1e-4))
        s2 = (s2 + 1e-3 / 50e-3 * rate2).clamp(min=math.log(1e-4))
    s = eng.init_state(x, y)
    eng.infer(s)
    assert_close(s.x[1], x1, atol=ROUNDOFF, what="x_1")
    assert_close(eng.params["log_sigma2_1"], s1, atol=ROUNDOFF, what="s_1")
    assert_close(eng.params["log_sigma2_2"], s2, atol=ROUNDOFF, what="s_2")
    assert_close(s.eps[2], s2.neg().exp() * (y - s.mu[2]), atol=ROUNDOFF, what="eps_2")


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_fast_path_equals_stepped_path(net):
    """The wavefront (fast) and the dense schedule give the same descent directions and
    energies with learned precisions, and after 4 Adam cycles the same tensors."""
    network = _mlp() if net == "mlp" else _conv()
    dyn = make_dynamics(n_steps=7)
    fast = TorchEngine(network, dyn, dtype=F64)
    stepped = TorchEngine(network, dyn, dtype=F64, params=fast.params.clone())
    x, y = _data(network.layers[0].shape)
    descent, e0, e1 = fast._fast.descent(x, y)
    s = stepped.init_state(x, y)
    stepped.infer(s)
    assert_close(e1, stepped.energy(s).mean(), atol=ROUNDOFF)
    grads = stepped.local_gradients(s)
    assert list(grads) == list(descent)
    for name, g in grads.items():
        assert_close(descent[name], -g, atol=ROUNDOFF, what=name)
    opt_f = torch.optim.Adam(fast.parameters(), lr=1e-2)
    opt_s = torch.optim.Adam(stepped.parameters(), lr=1e-2)
    for _ in range(4):
        fast.train_batch(x, y, opt_f)
        stepped.train_batch(x, y, opt_s, hooks=[_Watch()])
    for name, t in fast.params.items():
        assert_close(t, stepped.params[name], atol=1e-11, what=name)


def test_compiled_cycle_with_learned_precision_matches_eager():
    """torch.compile'd cycle with the AdamW update in its graph (float32): the learned
    variances, put back above their floor after the fused update, track the eager
    engine's over 4 batches to float32 round-off; a floor that clips in the first steps
    (sigma2_min = 0.9 under lr 0.05) is applied on both."""
    network = _net([{"size": 4},
                    {"size": 5, "activation": "gelu", "precision": {"per": "neuron", "init": 0.95,
                                                                   "sigma2_min": 0.9,
                                                                   "max_floor_share": 1.0}},
                    {"size": 3, "precision": {"per": "layer", "init": 1.2}}])
    dyn = make_dynamics(n_steps=5)
    eager = TorchEngine(network, dyn)
    compiled = TorchEngine(network, dyn, params=eager.params.clone(), compile=True)
    opts = [torch.optim.AdamW(e.parameters(), lr=0.05) for e in (eager, compiled)]
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(8, 4, generator=g), 0.3 * torch.randn(8, 3, generator=g)
        a = eager.train_batch(x, y, opts[0])
        b = compiled.train_batch(x, y, opts[1])
        assert_close(b.energy_final, a.energy_final, atol=1e-5, rtol=1e-5)
    assert compiled._fast._train_step is not None  # the fused graph ran
    for name, t in eager.params.items():
        assert_close(compiled.params[name], t, atol=1e-5, what=name)
    assert float(eager.params["log_sigma2_1"].min()) == pytest.approx(math.log(0.9))


def test_per_channel_variances_of_a_conv_layer_converge_to_the_true_ones():
    """A conv layer's per-channel variances: data ``x_1 = conv(x_0; W) + b + noise`` with
    noise variance 0.1 in channel 0 and 0.6 in channel 1. PC (both layers clamped) learns
    the kernel, the biases and s of shape (2, 1, 1) by SGD (the variances at their own
    learning rate, a parameter group of their own); the learned variances equal
    the per-channel maximum-likelihood ones (least squares over the 3x3 patches, residual
    mean square over samples and positions) to 1e-6, and those lie within
    4 sqrt(2 / (N H W)) of the truth."""
    n_samples = 500
    g = torch.Generator().manual_seed(6)
    w, b = torch.randn(2, 1, 3, 3, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)
    x = torch.randn(n_samples, 1, 6, 6, generator=g, dtype=F64)
    noise = torch.randn(n_samples, 2, 4, 4, generator=g, dtype=F64)
    true = torch.tensor([0.1, 0.6], dtype=F64)
    y = F.conv2d(x, w, b) + noise * true.sqrt().view(1, 2, 1, 1)
    network = _net([{"shape": [1, 6, 6]},
                    {"shape": [2, 4, 4], "projection": {"kind": "conv2d", "kernel": 3},
                     "precision": {"per": "channel"}}])
    eng = TorchEngine(network, make_dynamics(n_steps=0), dtype=F64)
    assert eng.params["log_sigma2_1"].shape == (2, 1, 1)
    # the kernel's gradient sums over the 16 positions: SGD is stable for lr * prec * 16
    # < 2, so below 0.0125 at prec = 10; the variances take their own, larger step
    weights = [eng.params["W_1"], eng.params["b_1"]]
    _train_sgd(eng, x, y, lr=0.01, n=800,
               groups=[{"params": weights}, {"params": [eng.params["log_sigma2_1"]], "lr": 0.5}])
    patches = F.unfold(x, 3).transpose(1, 2).reshape(-1, 9)  # (N * 16, 9)
    targets = y.flatten(2).transpose(1, 2).reshape(-1, 2)  # (N * 16, 2)
    closed_form = _ols_residual_variance(patches, targets)
    assert_close(eng.params["log_sigma2_1"].exp().flatten(), closed_form, atol=0, rtol=1e-6)
    assert_close(closed_form, true, atol=0, rtol=4 * math.sqrt(2 / (n_samples * 16)))


def test_event_mode_at_theta_zero_equals_dense():
    """Error neurons send ``eps = prec (x - mu)`` with the learned precision: at theta = 0
    the event-driven cycle (sigma-delta links) learns the same tensors as the dense one."""
    dyn = make_dynamics(n_steps=6)
    dense = TorchEngine(_mlp(), dyn, dtype=F64)
    event = TorchEngine(_mlp(), dyn, dtype=F64, params=dense.params.clone(),
                        events=EventsConfig(enabled=True, theta=0.0))
    x, y = _data()
    opt_d = torch.optim.SGD(dense.parameters(), lr=0.1)
    opt_e = torch.optim.SGD(event.parameters(), lr=0.1)
    for _ in range(3):
        dense.train_batch(x, y, opt_d)
        event.train_batch(x, y, opt_e)
    for name, t in dense.params.items():
        assert_close(event.params[name], t, atol=1e-12, what=name)


# ---------------------------------------------------------------------- counts, checkpoints
def test_prec_updates_are_counted_per_variance_per_learning_step():
    """SPEC 4: the learning step adds ``prec_updates`` once per variance, not per sample:
    5 (per neuron, layer 1) + 1 (per layer, layer 2) = 6 per batch, for 2 batches of 16
    = 12; each read and written once (8 bytes in float64). A continuously learned one
    counts at every Euler step: (5 + 1) x 4 steps x 2 batches = 48. The energy report
    lists prec_update as missing (no profile prices it) instead of pricing it at 0."""
    x, y = _data()
    for extra, expected in (({}, 12), ({"tau_prec": "50 ms"}, 48)):
        eng = TorchEngine(_mlp(**extra), make_dynamics(n_steps=4), dtype=F64)
        counter = OpCounter()
        eng.recorder = counter
        opt = torch.optim.SGD(eng.parameters(), lr=0.05)
        for _ in range(2):
            eng.train_batch(x, y, opt)
            counter.add_samples(len(x))
        counts = counter.result()
        assert counts.total("prec_updates", "learning") == expected
        assert counts.total("prec_updates", target="prec_1") == expected * 5 // 6
        assert counts.total("prec_updates", "inference") == 0
        assert counts.summary()["learning"]["prec_updates"] == expected / 32
    report = estimate_energy(counts, load_profile("loihi", REPO / "hw_profiles"))
    assert report.phases["learning"].missing[-1] == "prec_update"
    assert report.phases["learning"].counts["prec_update"] == 48


def test_checkpoint_round_trip_keeps_the_variances(tmp_path):
    """The parameter store carries the log-variances into a checkpoint and back exactly;
    a network without them refuses it, naming the tensor."""
    eng = TorchEngine(_conv(), make_dynamics(n_steps=4), dtype=F64)
    x, y = _data((1, 6, 6))
    _train_sgd(eng, x, y, lr=0.1, n=3)
    assert list(eng.state_dict()["tensors"])[-2:] == ["log_sigma2_1", "log_sigma2_2"]
    torch.save(eng.state_dict(), tmp_path / "p.pt")
    fresh = TorchEngine(_conv(), make_dynamics(n_steps=4), dtype=F64, seed=5)
    fresh.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    for name, t in eng.params.items():
        assert torch.equal(fresh.params[name], t), name
    assert_close(fresh.prec[1], eng.prec[1], atol=0)
    fixed = _net([{"shape": [1, 6, 6]}, {"shape": [2, 4, 4], "activation": "tanh",
                                         "projection": {"kind": "conv2d", "kernel": 3}},
                  {"size": 3}])
    with pytest.raises(ValueError, match="log_sigma2_1"):
        TorchEngine(fixed, make_dynamics(n_steps=4)).load_state_dict(eng.state_dict())


ARGS = ["--set", "network.layers.1.size=32", "--set", "network.layers.2.size=32",
        "--set", "data.limit_train=600", "--set", "data.limit_test=200",
        "--set", "dynamics.n_steps=4", "--set", "learning.batch_size=50",
        "--set", "run.device=cpu", "--set", "run.checkpoint_every=3",
        "--set", "run.threads=1", "--no-progress",
        "--set", "network.layers.1.precision={per: neuron}",
        "--set", "network.layers.3.precision={per: layer, init: 0.5}"]


def test_resume_carries_the_variances_bitwise(mnist_root, tmp_path, monkeypatch):
    """A run stopped mid-epoch 2 (after a checkpoint) and resumed ends with the same
    log-variances, weights and Adam state, bitwise, as an uninterrupted run."""
    config = str(REPO / "networks" / "mnist_pc.yaml")
    common = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path), "--epochs", "2"]
    assert main(["run", config, "--set", "run.name=whole", *common]) == 0
    real, calls = TorchEngine.train_batch, [0]

    def interrupted(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 12 + 8:  # epoch 2 (12 batches an epoch), after its batch-6 checkpoint
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TorchEngine, "train_batch", interrupted)
    assert main(["run", config, "--set", "run.name=cut", *common]) == 130
    monkeypatch.setattr(TorchEngine, "train_batch", real)
    assert main(["run", config, "--resume", str(tmp_path / "cut"), *common]) == 0
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert cut["epoch"] == whole["epoch"] == 2
    assert {"log_sigma2_1", "log_sigma2_3"} <= set(cut["params"]["tensors"])
    assert cut["params"]["tensors"]["log_sigma2_1"].shape == (32,)
    for name, t in whole["params"]["tensors"].items():
        assert torch.equal(cut["params"]["tensors"][name], t), name
    assert float(whole["params"]["tensors"]["log_sigma2_3"]) != math.log(0.5)  # it learned
    for a, b in zip(cut["optimizer"]["state"].values(), whole["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_guard_exits_1_and_keeps_the_last_good_checkpoint(mnist_root, tmp_path, capsys):
    """The output layer's one-hot errors are far below a floor of 0.5: its variance
    reaches the floor within a few Adam steps (lr 0.05, from 0.6). `pcsim run` stops
    with exit code 1, naming the layer, the epoch and batch, the step and the cause;
    the checkpoint on disk is finite, loads, and holds a variance above the floor."""
    config = str(REPO / "networks" / "mnist_pc.yaml")
    rc = main(["run", config, "--set", "run.name=g", *ARGS, "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "learning.lr=0.05",
               "--set", "network.layers.3.precision={sigma2_min: 0.5, init: 0.6}"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "epoch 1, batch" in err and "learned precision of layer 3, after learning step" in err
    assert "sit at the floor sigma2_min = 0.5" in err and "last good checkpoint" in err
    ckpt = torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["params"]["tensors"].values())
    assert float(ckpt["params"]["tensors"]["log_sigma2_3"]) > math.log(0.5)


# ---------------------------------------------------------------------- YAML and refusals
def _config(precision, shape=None, layer=1, **sections):
    layers = [{"size": 784}, {"size": 16, "activation": "tanh"}, {"size": 10}]
    if shape is not None:
        layers[1] = {"shape": shape, "activation": "tanh"}
    layers[layer] = {**layers[layer], "precision": precision}
    return {"network": {"layers": layers}, **sections}


def test_yaml_fields_build_the_descriptor():
    """``precision: log_variance`` is the defaults; the layer's prec gives the starting
    variance 1 / prec unless init is set; times parse with units."""
    cfg = config_from_dict(_config({"per": "neuron", "sigma2_min": 1e-3, "tau_prec": "200 ms",
                                    "max_floor_share": 0.25}))
    network = Network.from_config(cfg.network)
    assert network.layers[1].precision == LogVariance(per="neuron", sigma2_min=1e-3, init=1.0,
                                                      tau_prec=0.2, max_floor_share=0.25)
    data = _config("log_variance", layer=2)
    data["network"]["layers"][2]["prec"] = 4.0
    network = Network.from_config(config_from_dict(data).network)
    assert network.layers[2].precision == LogVariance(init=0.25)
    assert network.layers[0].precision is None and network.learned_precision


@pytest.mark.parametrize("precision, shape, layer, expected", [
    ({"per": "pixel"}, None, 1, "network.layers.1.precision.per: Input should be 'layer', "
                                "'neuron' or 'channel'"),
    ({"kind": "softplus"}, None, 1, "network.layers.1.precision.kind: Input should be "
                                    "'log_variance'"),
    ({"sigma2_min": 0}, None, 1, "network.layers.1.precision.sigma2_min: Input should be "
                                 "greater than 0"),
    ({"sigma2_min": "inf"}, None, 1, "precision.sigma2_min must be finite"),
    ({"tau_prec": "inf"}, None, 1, "precision.tau_prec must be finite"),
    ({"tau_prec": "-3 ms"}, None, 1, "network.layers.1.precision.tau_prec: Input should be "
                                     "greater than 0"),
    ({"max_floor_share": 1.5}, None, 1, "network.layers.1.precision.max_floor_share: Input "
                                        "should be less than or equal to 1"),
    ({"init": 1e-5, "sigma2_min": 1e-3}, None, 1, "precision.init 1e-05 (the starting "
                                                  "variance) must be finite and >="),
    ({"sigma2_min": 2.0}, None, 1, "the starting variance 1 / prec = 1 is below "
                                   "precision.sigma2_min 2"),
    ({"per": "channel"}, None, 1, "network.layers.1: Value error, precision.per 'channel' "
                                  "needs a (C, H, W) layer"),
    ({"floor": 0.1}, None, 1, "network.layers.1.precision.floor: unknown key"),
    ({"per": "layer"}, None, 0, "layers.0.precision: layer 0 has no error neurons"),
    (3, None, 1, "network.layers.1.precision"),
])
def test_yaml_errors_name_the_field(precision, shape, layer, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_config(precision, shape, layer), "net.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("net.yaml: invalid configuration")


def test_per_channel_needs_a_shaped_layer_and_accepts_one():
    cfg = config_from_dict(_config({"per": "channel"}, shape=[1, 4, 4]))
    layer = Network.from_config(cfg.network).layers[1]
    assert layer.precision.param_shape(layer.shape) == (1, 1, 1)


@pytest.mark.parametrize("sections, data_parallel, expected", [
    ({"learning": {"rule": "bp"}}, False, "learning.rule 'bp' keeps every precision fixed "
                                          "(network.layers.*.precision)"),
    ({"run": {"backend": "brian2", "dtype": "float64", "device": "cpu"}}, False, None),
    ({"run": {"backend": "brian2", "dtype": "float64", "device": "cpu"}}, "tau_prec",
     "run.backend 'brian2' learns precisions only by the learning step: set "
     "network.layers.*.precision.tau_prec: null"),
    ({}, "tau_prec+dp", "data-parallel runs learn it by the learning step"),
])
def test_trainers_refuse_what_they_cannot_learn(sections, data_parallel, expected):
    """Declared capabilities: backprop keeps precisions fixed; brian2 learns them by the
    learning step only; a continuously learned precision cannot run data-parallel."""
    precision = {"per": "neuron"}
    if data_parallel in ("tau_prec", "tau_prec+dp"):
        precision["tau_prec"] = "100 ms"
    cfg = config_from_dict(_config(precision, **sections))
    if expected is None:
        check_trainer(cfg)
        return
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*")):
        check_trainer(cfg, data_parallel=data_parallel == "tau_prec+dp")


def test_brian2_and_torch_agree_on_a_small_net():
    """brian2 integrates inference with each error neuron's ``prec`` a per-neuron variable
    set from the learned variances; the learning step (the torch class's rule, SGD) then
    leaves the same weights and log-variances as the torch engine, over 3 cycles
    (float64, a few ulps); a continuous tau_prec is refused with the reason."""
    pytest.importorskip("brian2")
    from pcsim.engines.brian2.trainer import Brian2Trainer

    network = _mlp()
    dyn = make_dynamics(n_steps=6, dt=1e-3, tau_x=10e-3)
    torch_engine = TorchEngine(network, dyn, dtype=F64, seed=3)
    brian = Brian2Trainer(network, dyn, seed=3)
    opt_t = torch.optim.SGD(torch_engine.parameters(), lr=0.2)
    opt_b = torch.optim.SGD(brian.parameters(), lr=0.2)
    for seed in range(3):
        x, y = _data(n=4, seed=seed)
        torch_engine.train_batch(x, y, opt_t)
        brian.train_batch(x, y, opt_b)
    for name, t in torch_engine.params.items():
        assert_close(brian.params[name], t, atol=1e-12, what=name)
    assert float((torch_engine.params["log_sigma2_1"] - math.log(0.7)).abs().min()) > 1e-3
    with pytest.raises(ValueError, match="layer 1: a continuously learned precision"):
        Brian2Trainer(_mlp(tau_prec="10 ms"), dyn)


# ---------------------------------------------------------------------- run folder, traces
def test_generative_run_writes_the_uncertainty_map_metrics_and_variance_traces(
        mnist_root, tmp_path):
    """The autoencoder with a learned per-pixel output variance: the run folder has
    uncertainty.png beside reconstructions.png; every metrics record carries the
    smallest and largest variance and the share at the floor of each learned layer
    (equal to the checkpoint's tensors); the test energy uses the learned precision
    (recomputed here from the checkpoint); the traces hold a ``variance_l2`` frame
    report of 784 values with the layer's shape, constant over the trial (learned by the
    learning step), and recording leaves the trained variances untouched."""
    import h5py
    import json
    from pcsim.experiment import load_run
    config = str(REPO / "networks" / "mnist_pc_autoencoder.yaml")
    rc = main(["run", config, "--data-root", str(mnist_root), "--out", str(tmp_path),
               "--set", "run.name=ae", "--epochs", "3", "--no-progress",
               "--set", "data.limit_train=1280", "--set", "data.limit_test=100",
               "--set", "learning.lr=0.03",
               "--set", "run.device=cpu", "--set", "run.threads=1",
               "--set", "dynamics.n_steps=10", "--set", "network.layers.1.size=32",
               "--set", "network.layers.2.precision={per: neuron, sigma2_min: 1e-3}",
               "--set", "traces.enabled=true", "--set", "traces.samples=3"])
    assert rc == 0
    run = tmp_path / "ae"
    assert (run / "uncertainty.png").stat().st_size > 0
    assert (run / "reconstructions.png").exists()
    record = json.loads((run / "metrics.json").read_text())[-1]
    _, trainer, ckpt = load_run(run, device="cpu")
    var = ckpt["params"]["tensors"]["log_sigma2_2"].exp()
    assert var.shape == (784,)
    assert record["variance_min_l2"] == pytest.approx(float(var.min()), rel=1e-12)
    assert record["variance_max_l2"] == pytest.approx(float(var.max()), rel=1e-12)
    assert record["variance_floor_share_l2"] == pytest.approx(
        float((var <= 1e-3 * (1 + 1e-9)).double().mean()), abs=1e-12)
    assert float(var.max()) > float(var.min()) and float(var.max()) < 0.5  # it learned, per pixel
    from pcsim.data import load_dataset
    from pcsim.evaluation import evaluate
    data = load_dataset("mnist", mnist_root, limit_train=10, limit_test=100,
                        normalize=False).to("cpu", torch.float32)
    again = evaluate(trainer, data, target="image")
    recon = trainer.reconstruct(data.test_x).reshape(100, -1).double()
    ref = data.test_x.reshape(100, -1).double()
    prec = var.reciprocal()
    by_hand = (0.5 * (prec * (ref - recon) ** 2).sum(1) - 0.5 * prec.log().sum()).mean()
    assert again["test_energy"] == pytest.approx(float(by_hand), rel=1e-5)
    with h5py.File(run / "traces.h5", "r") as f:
        report = f["report/variance_l2"]
        assert tuple(report.attrs["shape"]) == (784,)
        data_ = report["data"][:]
        assert data_.shape == (3 * 11 * 1, 784)  # 3 trials of 11 frames, the last epoch
        assert (data_ == data_[0]).all()
        assert abs(data_[0] - var.float().numpy()).max() < 1e-6 * float(var.max())
    assert torch.equal(trainer.params["log_sigma2_2"], ckpt["params"]["tensors"]["log_sigma2_2"])


def test_traces_follow_a_continuously_learned_variance_and_restore_it():
    """With tau_prec set, the variance moves during inference: the trace's frames are
    the variance after each step (first order to the ODE is tested above), and the
    engine's variances are put back after recording."""
    from pcsim.monitors.traces import TraceRecorder

    network = _net([{"size": 4},
                    {"size": 3, "precision": {"per": "neuron", "tau_prec": "10 ms", "init": 2.0}}])
    eng = TorchEngine(network, make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=5), dtype=F64)
    x, y = _data()
    before = eng.params["log_sigma2_1"].clone()
    rec = TraceRecorder({"value_l1": 3, "variance_l1": 3}, [], len(x), 6, 2,
                        variance_of=lambda l: eng.precisions[l].variance())
    eng.trace(x, y, 1, rec.on_frame)
    frames = torch.as_tensor(rec.frames["variance_l1"][0], dtype=F64)  # (6, 3)
    assert torch.allclose(frames[0], before.exp(), rtol=1e-6)
    assert (frames[1:] != frames[:-1]).all()  # it moved at every step
    reference = TorchEngine(network, make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=5),
                            dtype=F64, params=eng.params.clone())
    s = reference.init_state(x, y)
    reference.infer(s)
    assert torch.allclose(frames[-1], reference.params["log_sigma2_1"].exp(), rtol=1e-6)
    assert torch.equal(eng.params["log_sigma2_1"], before)
