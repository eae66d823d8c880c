"""Convergence-based stopping of inference (dynamics.stop_tol)."""

from __future__ import annotations

import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.monitors import OpCounter
from tests.conftest import make_dynamics, make_network


def _engine(stop_tol, steps=200):
    net = make_network([5, 8, 8, 3], ["identity", "tanh", "tanh", "identity"])
    return TorchEngine(net, make_dynamics(tau_x=10e-3, dt=1e-3, n_steps=steps,
                                          stop_tol=stop_tol), dtype=torch.float64, seed=2)


def test_stops_where_one_step_gains_less_than_tol():
    """The run stops at the first step whose relative energy drop is below tol: the step
    before it gained at least tol, and it stops well before T on this relaxing network."""
    tol = 1e-3
    eng = _engine(tol)
    x0, target = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    s = eng.init_state(x0, target)
    eng.infer(s)
    k = s.step
    assert 2 < k < 200
    ref = _engine(None)  # replay without stopping, reading E after every step
    r = ref.init_state(x0, target)
    energies = [float(ref.energy(r).mean())]
    for _ in range(k):
        ref.step(r)
        energies.append(float(ref.energy(r).mean()))
    drops = [(a - b) / a for a, b in zip(energies[:-1], energies[1:])]
    assert drops[-1] < tol and min(drops[:-1]) >= tol


def test_train_batch_reports_steps_and_counts_only_those():
    """train_batch returns the steps it ran, and the op counter sees exactly that many
    inference steps (no silent full-T cost)."""
    eng = _engine(5e-3)
    assert not eng.fast_path_applies()
    eng.recorder = OpCounter()
    x0, target = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    out = eng.train_batch(x0, target, torch.optim.SGD(eng.parameters(), lr=0.0))
    steps = out["steps"]
    assert 0 < steps < 200
    counts = eng.recorder.result()
    per_step = 2 * 4 * (8 * 8 + 3 * 8)  # adjoint + forward of W_2, W_3 for 4 samples
    ff = 4 * (5 * 8 + 8 * 8 + 3 * 8)
    assert counts.total("dense_macs", phase="inference") == ff + steps * per_step
