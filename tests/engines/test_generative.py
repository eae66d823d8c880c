"""Generative mode (SPEC 1): data clamped at the top, a free latent x_0 under a Gaussian
prior; encoding is inference, the network is only the decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network, pairs


def _engine(sizes, acts, prec=None, prec_0=1.0, steps=20, dt=1e-3):
    net = make_network(sizes, acts, prec=prec, mode="generative")
    net = type(net)(net.layers, net.projections, net.mode, prec_0)
    return TorchEngine(net, make_dynamics(tau_x=10e-3, dt=dt, n_steps=steps),
                       dtype=torch.float64, seed=3)


def test_inference_lowers_reconstruction_energy():
    """From x_0 = 0, every Euler step of a small eta_x lowers E (prior plus the
    decoder's errors) and the reconstruction error of the feedforward decoding; the
    latent moves away from 0."""
    eng = _engine([6, 12, 20], ["identity", "tanh", "sigmoid"], steps=0)
    data = torch.rand(8, 20, dtype=torch.float64)
    s = eng.init_state(None, data, phase="test")
    energies = [eng.energy(s)]
    recon0 = ((eng.predict(s.x[0]) - data) ** 2).sum(1)
    for _ in range(200):
        eng.step(s)
        energies.append(eng.energy(s))
    e = torch.stack(energies)  # (steps + 1, batch)
    assert bool((e[1:] <= e[:-1] + ROUNDOFF).all()), "E rose during inference"
    assert bool((e[-1] < e[0] - 1e-3).all()) and float(e[-1].mean()) < 0.97 * float(e[0].mean())
    assert float(s.x[0].abs().max()) > 1e-3
    recon = ((eng.predict(s.x[0]) - data) ** 2).sum(1)
    assert float(recon.mean()) < float(recon0.mean())


@pytest.mark.parametrize("prec_0", [1.0, 0.3])
def test_linear_decoder_latent_is_regularised_least_squares(prec_0):
    """One linear projection d ~ W z + b with prior 0.5 prec_0 ||z||^2 and output
    precision p: inference converges to z* = (p W^T W + prec_0 I)^{-1} p W^T (d - b)."""
    p = 2.0
    eng = _engine([4, 9], ["identity", "identity"], prec=[1.0, p], prec_0=prec_0, dt=1e-3)
    W, b = pairs(eng.params)[0][0].numpy(), pairs(eng.params)[0][1].numpy()
    data = torch.randn(5, 9, dtype=torch.float64)
    z = eng.encode(data)  # T = 20 steps is far from converged; run to equilibrium
    s = eng.init_state(None, data, phase="test")
    eng.dt = 2e-3  # eta_x = 0.2 < 2 / (p ||W||^2 + prec_0): stable, and 3000 steps converge
    eng.infer(s, 3000)
    A = p * W.T @ W + prec_0 * np.eye(4)
    expected = np.linalg.solve(A, p * W.T @ (data.numpy() - b).T).T
    assert_close(s.x[0], expected, atol=1e-9)
    assert float((z - torch.as_tensor(expected)).norm()) > 1e-3  # T = 20 alone is not there


def test_linear_two_layer_decoder_joint_equilibrium():
    """Two linear projections, hidden layer free: the equilibrium (x_0, x_1) solves the
    stationarity of the quadratic E, a block linear system solved here with numpy."""
    p1, p2, prec_0 = 1.5, 0.7, 0.5
    eng = _engine([3, 5, 7], ["identity", "identity", "identity"], prec=[1.0, p1, p2],
                  prec_0=prec_0)
    (W1, b1), (W2, b2) = [(w.numpy(), bb.numpy()) for w, bb in pairs(eng.params)]
    d = np.random.default_rng(1).normal(size=7)
    # dE/dx0 = prec_0 x0 - p1 W1^T (x1 - W1 x0 - b1) = 0
    # dE/dx1 = p1 (x1 - W1 x0 - b1) - p2 W2^T (d - W2 x1 - b2) = 0
    H = np.block([[prec_0 * np.eye(3) + p1 * W1.T @ W1, -p1 * W1.T],
                  [-p1 * W1, p1 * np.eye(5) + p2 * W2.T @ W2]])
    rhs = np.concatenate([-p1 * W1.T @ b1, p1 * b1 + p2 * W2.T @ (d - b2)])
    sol = np.linalg.solve(H, rhs)
    s = eng.init_state(None, torch.as_tensor(d)[None], phase="test")
    eng.dt = 4e-3  # eta_x = 0.4, below 2 / lambda_max(H) for these weights
    assert 0.4 * np.linalg.eigvalsh(H).max() < 2
    eng.infer(s, 5000)
    assert_close(s.x[0][0], sol[:3], atol=1e-8)
    assert_close(s.x[1][0], sol[3:], atol=1e-8)


def test_generative_training_lowers_test_reconstruction_error():
    """Learning on the local rule reduces the reconstruction error of held-out data drawn
    from a fixed linear-Gaussian generator (a decoder can learn it)."""
    g = torch.Generator().manual_seed(0)
    gen_w = torch.randn(16, 3, generator=g, dtype=torch.float64) / 2
    sample = lambda n: torch.sigmoid(torch.randn(n, 3, generator=g, dtype=torch.float64) @ gen_w.T)
    train, test = sample(512), sample(128)
    eng = _engine([3, 16], ["identity", "sigmoid"], steps=30, dt=1e-3)
    before = float(((eng.reconstruct(test) - test) ** 2).mean())
    opt = torch.optim.Adam(eng.parameters(), lr=1e-2)
    for epoch in range(15):
        for i in range(0, 512, 32):
            eng.train_batch(None, train[i:i + 32], opt)
    after = float(((eng.reconstruct(test) - test) ** 2).mean())
    assert after < 0.3 * before, (before, after)
