"""The torch engine against independent references (SPEC 2.1-2.5).

Each reference below is written from the equations of SPEC, in numpy, without pcsim's
engine: the textbook discrete PC algorithm, a linear solve, and autograd backprop.
"""


import numpy as np
import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.optim import make_optimizer
from pcsim.config.schema import LearningConfig
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network, pairs

ACTS = ["identity", "tanh", "relu", "tanh", "identity"]
SIZES = [6, 9, 7, 5, 4]


def _np_act(name):
    if name == "identity":
        return (lambda a: a), (lambda a: np.ones_like(a))
    if name == "tanh":
        return np.tanh, (lambda a: 1 - np.tanh(a) ** 2)
    if name == "relu":
        return (lambda a: np.maximum(a, 0)), (lambda a: (a > 0).astype(float))
    raise KeyError(name)


def discrete_pc_reference(W, b, x_in, target, acts, prec, eta_x, T, eta_w):
    """SPEC 2.3, written out: feedforward init, T synchronous steps
    x_l <- x_l - eta_x dE/dx_l, then W_l <- W_l - eta_w mean_batch dE/dW_l (plain numpy)."""
    L = len(W)
    f = [None] + [_np_act(a)[0] for a in acts[1:]]
    fp = [None] + [_np_act(a)[1] for a in acts[1:]]
    x = [x_in]
    for l in range(1, L + 1):
        x.append(f[l](x[l - 1] @ W[l - 1].T + b[l - 1]))
    x[L] = target

    def errors(x):
        a = [None] + [x[l - 1] @ W[l - 1].T + b[l - 1] for l in range(1, L + 1)]
        eps = [None] + [prec[l] * (x[l] - f[l](a[l])) for l in range(1, L + 1)]
        return a, eps

    for _ in range(T):
        a, eps = errors(x)
        new = list(x)
        for l in range(1, L):  # free hidden layers; x_0 and x_L clamped
            dE_dx = eps[l] - (fp[l + 1](a[l + 1]) * eps[l + 1]) @ W[l]
            new[l] = x[l] - eta_x * dE_dx
        x = new
    a, eps = errors(x)
    B = x_in.shape[0]
    W_new, b_new = [], []
    for l in range(1, L + 1):
        g = fp[l](a[l]) * eps[l]
        dE_dW = -(g.T @ x[l - 1]) / B
        dE_db = -g.mean(0)
        W_new.append(W[l - 1] - eta_w * dE_dW)
        b_new.append(b[l - 1] - eta_w * dE_db)
    return x, W_new, b_new


def _engine(dt=1e-3, tau_x=10e-3, n_steps=7, prec=None, acts=ACTS, sizes=SIZES, **dyn):
    net = make_network(sizes, acts, prec=prec)
    return TorchEngine(net, make_dynamics(dt=dt, tau_x=tau_x, n_steps=n_steps, **dyn),
                       dtype=torch.float64, seed=3)


def _batch(sizes=SIZES, batch=8):
    return torch.randn(batch, sizes[0], dtype=torch.float64), torch.randn(batch, sizes[-1], dtype=torch.float64)


def test_euler_equals_discrete_update():
    """Euler with tau_eps = 0, tau_w = inf and eta_x = dt/tau_x, then one SGD step with
    lr eta_w, equals the textbook discrete PC update to float64 round-off, over three
    batches (so the learned weights feed the next inference too)."""
    prec = [1.0, 1.0, 0.5, 2.0, 1.5]
    eng = _engine(dt=0.5e-3, tau_x=5e-3, n_steps=9, prec=prec)
    eta_w = 0.05
    opt = make_optimizer(LearningConfig(optimizer="sgd", lr=eta_w), eng.parameters())
    W = [w.numpy().copy() for w, _ in pairs(eng.params)]
    b = [bb.numpy().copy() for _, bb in pairs(eng.params)]
    for _ in range(3):
        x_in, target = _batch()
        x_ref, W, b = discrete_pc_reference(W, b, x_in.numpy(), target.numpy(), ACTS, prec,
                                            eta_x=0.5 / 5, T=9, eta_w=eta_w)
        s = eng.init_state(x_in, target)
        eng.infer(s)
        for l in range(len(SIZES)):
            assert_close(s.x[l], x_ref[l], atol=ROUNDOFF, what=f"x_{l}")
        eng.apply_gradients(eng.local_gradients(s), opt)
        for l, (w, bb) in enumerate(pairs(eng.params)):
            assert_close(w, W[l], atol=ROUNDOFF, what=f"W_{l + 1}")
            assert_close(bb, b[l], atol=ROUNDOFF, what=f"b_{l + 1}")


SMOOTH = ["identity", "tanh", "sigmoid", "tanh", "identity"]


def _run_to(eng, t_end, x_in, target, start_offset):
    s = eng.init_state(x_in, target)
    for l in range(1, len(SIZES) - 1):  # start away from the feedforward state
        eng.assign(s, l, x=s.x[l] + start_offset[l])
    eng.infer(s, int(round(t_end / eng.dt)))
    return torch.cat([s.x[l] for l in range(1, len(SIZES) - 1)], 1)


def test_euler_converges_with_first_order():
    """Halving dt at fixed simulated time halves the error against a fine-step solution
    (forward Euler is first order): error ratios lie in [1.8, 2.2]. Smooth activations
    only: relu's kink makes the right-hand side non-smooth and the order irregular."""
    x_in, target = _batch()
    offset = [None] + [0.5 * torch.randn(8, n, dtype=torch.float64) for n in SIZES[1:]]
    t_end, tau_x = 8e-3, 10e-3
    ref = _run_to(_engine(dt=tau_x / 2560, tau_x=tau_x, acts=SMOOTH), t_end, x_in, target, offset)
    errors = []
    for dt in (tau_x / 20, tau_x / 40, tau_x / 80, tau_x / 160):
        x = _run_to(_engine(dt=dt, tau_x=tau_x, acts=SMOOTH), t_end, x_in, target, offset)
        errors.append(float((x - ref).abs().max()))
    ratios = [errors[k] / errors[k + 1] for k in range(len(errors) - 1)]
    assert all(1.8 <= r <= 2.2 for r in ratios), (errors, ratios)


def test_equilibrium_is_independent_of_dt():
    """The fixed point of the dynamics does not depend on the step: two step sizes
    relaxed for long enough agree to 1e-9."""
    x_in, target = _batch()
    finals = []
    for dt in (1e-3, 0.37e-3):
        eng = _engine(dt=dt, tau_x=10e-3, acts=SMOOTH)
        s = eng.init_state(x_in, target)
        eng.infer(s, int(round(0.6 / dt)))  # 60 tau_x
        finals.append(torch.cat(s.x[1:-1], 1))
    assert_close(finals[0], finals[1], atol=1e-9)


def test_feedforward_start_has_zero_hidden_errors_and_energy_decreases():
    """The feedforward start sets x_l = mu_l, so every hidden error is exactly 0 and E is
    the output term alone; with a small step (eta_x = 0.05) E never increases (smooth
    activations: at a relu kink the gradient jumps and a step can overshoot)."""
    eng = _engine(dt=0.5e-3, tau_x=10e-3, acts=SMOOTH)
    x_in, target = _batch()
    s = eng.init_state(x_in, target)
    for l in range(1, len(SIZES) - 1):
        assert torch.count_nonzero(s.eps[l]) == 0
    top = 0.5 * ((target - s.mu[-1]) ** 2).sum(1)
    assert_close(eng.energy(s), top, atol=ROUNDOFF)
    energies = [eng.energy(s).sum().item()]
    for _ in range(300):
        eng.step(s)
        energies.append(eng.energy(s).sum().item())
    diffs = np.diff(energies)
    assert (diffs <= 1e-12).all(), diffs.max()
    assert energies[-1] < 0.5 * energies[0]


def linear_equilibrium(W, b, prec, x_in, target):
    """Solve dE/dx_l = 0 for the free layers of a linear network (numpy.linalg.solve).

    For free l: prec_l (x_l - W_l x_{l-1} - b_l) - W_{l+1}^T prec_{l+1} (x_{l+1} - W_{l+1} x_l
    - b_{l+1}) = 0, one block row of A z = r with z the stacked free layers."""
    L = len(W)
    sizes = [W[0].shape[1]] + [w.shape[0] for w in W]
    offs = np.cumsum([0] + sizes[1:L])
    n = offs[-1]
    B = x_in.shape[0]
    A = np.zeros((n, n))
    r = np.zeros((B, n))
    for l in range(1, L):
        i = slice(offs[l - 1], offs[l])
        Wl, Wn = W[l - 1], W[l]
        A[i, i] += prec[l] * np.eye(sizes[l]) + prec[l + 1] * Wn.T @ Wn
        r[:, i] += prec[l] * b[l - 1] - prec[l + 1] * (b[l] @ Wn)
        if l == 1:
            r[:, i] += prec[l] * x_in @ Wl.T
        else:
            A[i, slice(offs[l - 2], offs[l - 1])] -= prec[l] * Wl
        if l == L - 1:
            r[:, i] += prec[l + 1] * target @ Wn
        else:
            A[i, slice(offs[l], offs[l + 1])] -= prec[l + 1] * Wn.T
    return np.linalg.solve(A, r.T).T


@pytest.mark.parametrize("tau_eps", [0.0, 2e-3])
def test_linear_network_relaxes_to_linear_solve(tau_eps):
    """A linear network (identity activations) relaxes to the solution of its linear
    system; with leaky error neurons (tau_eps > 0) it reaches the same equilibrium."""
    sizes, acts, prec = [5, 8, 6, 7, 3], ["identity"] * 5, [1.0, 1.0, 0.8, 1.3, 0.6]
    eng = _engine(dt=0.2e-3, tau_x=10e-3, sizes=sizes, acts=acts, prec=prec, tau_eps=tau_eps)
    with torch.no_grad():
        for _, bb in pairs(eng.params):
            bb.normal_(0, 0.3)
    x_in, target = _batch(sizes, 4)
    s = eng.init_state(x_in, target)
    eng.infer(s, 20000)  # 400 ms = 40 tau_x
    W = [w.numpy() for w, _ in pairs(eng.params)]
    b = [bb.numpy() for _, bb in pairs(eng.params)]
    z = linear_equilibrium(W, b, prec, x_in.numpy(), target.numpy())
    assert_close(torch.cat(s.x[1:-1], 1), z, atol=1e-9)


def test_finite_tau_w_moves_weights_during_inference():
    """With finite tau_w each Euler step changes W_l by dt/tau_w (g_l x_{l-1}^T / B -
    lambda W_l), computed from the state before the step (SPEC 2.2)."""
    net = make_network(SIZES, ACTS)
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, tau_w=1.0, n_steps=3)
    eng = TorchEngine(net, dyn, dtype=torch.float64, seed=1, weight_decay=0.01)
    x_in, target = _batch()
    s = eng.init_state(x_in, target)
    for _ in range(3):
        before = [(w.clone(), bb.clone()) for w, bb in pairs(eng.params)]
        g = [None] + [s.g[l].clone() for l in range(1, len(SIZES))]
        x = [t.clone() for t in s.x]
        eng.step(s)
        for l in range(1, len(SIZES)):
            w0, b0 = before[l - 1]
            expect_w = w0 + 1e-3 / 1.0 * (g[l].T @ x[l - 1] / 8 - 0.01 * w0)
            assert_close(pairs(eng.params)[l - 1][0], expect_w, atol=ROUNDOFF)
            assert_close(pairs(eng.params)[l - 1][1], b0 + 1e-3 * g[l].mean(0), atol=ROUNDOFF)


def _bp_gradients(eng, x_in, target):
    """Autograd gradients of 0.5 ||y - target||^2 (batch mean) for the same weights."""
    W = [w.clone().requires_grad_(True) for w, _ in pairs(eng.params)]
    b = [bb.clone().requires_grad_(True) for _, bb in pairs(eng.params)]
    x = x_in
    for l, act in enumerate(eng.activations[1:]):
        x = act.f(x @ W[l].T + b[l], torch)
    loss = 0.5 * ((x - target) ** 2).sum(1).mean()
    loss.backward()
    return [-w.grad for w in W]


def test_weak_output_nudging_recovers_backprop():
    """With output precision prec_L -> 0 the PC weight updates at equilibrium align with
    the backprop gradients (Whittington & Bogacz 2017): cosine similarity rises towards 1
    and exceeds 0.9999 at prec_L = 1e-3."""
    x_in, target = _batch()
    cosines = []
    for prec_L in (1.0, 1e-1, 1e-2, 1e-3):
        prec = [1.0, 1.0, 1.0, 1.0, prec_L]
        eng = _engine(dt=1e-3, tau_x=10e-3, prec=prec)
        bp = torch.cat([g.flatten() for g in _bp_gradients(eng, x_in, target)])
        s = eng.init_state(x_in, target)
        eng.infer(s, 3000)
        pc = torch.cat([dw.flatten() for dw, _ in pairs(eng.local_gradients(s))])
        cosines.append(float(pc @ bp / (pc.norm() * bp.norm())))
    assert all(a < b for a, b in zip(cosines, cosines[1:])), cosines
    assert cosines[-1] > 0.9999, cosines
