"""The engine's fast path (one function per PC cycle, optionally compiled) computes what
stepping a PCState computes: same energies, same local gradients, same learning step."""

from __future__ import annotations

import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.fast import pc_cycle
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network, pairs


class _Watch:
    """A hook: its presence forces the stepped path."""

    def on_step(self, engine, s, k):
        pass


def _pair(sizes, acts, mode="supervised", steps=7, dtype=torch.float64, compile=False):
    net = make_network(sizes, acts, prec=[1.0] * (len(sizes) - 1) + [0.5], mode=mode)
    dyn = make_dynamics(tau_x=10e-3, dt=1e-3, n_steps=steps)
    return [TorchEngine(net, dyn, dtype=dtype, seed=5, compile=c) for c in (False, compile)]


@pytest.mark.parametrize("mode,acts", [
    ("supervised", ["identity", "tanh", "gelu", "identity"]),
    ("supervised", ["identity", "sigmoid", "relu", "tanh"]),
    ("generative", ["identity", "tanh", "leaky_relu", "sigmoid"]),
])
def test_fast_cycle_equals_stepped_cycle(mode, acts):
    """Three training batches (Adam): energies and weights agree to float64 round-off."""
    stepped, fast = _pair([6, 9, 8, 5], acts, mode)
    opts = [torch.optim.Adam(e.parameters(), lr=1e-2) for e in (stepped, fast)]
    for batch in range(3):
        x0 = torch.randn(4, 6, dtype=torch.float64)
        target = torch.rand(4, 5, dtype=torch.float64)
        if mode == "generative":
            x0 = None
        assert fast.fast_path_applies() and not stepped.fast_path_applies([_Watch()])
        a = stepped.train_batch(x0, target, opts[0], hooks=[_Watch()])
        b = fast.train_batch(x0, target, opts[1])
        assert_close(b["energy_initial"], a["energy_initial"], atol=ROUNDOFF)
        assert_close(b["energy_final"], a["energy_final"], atol=ROUNDOFF)
        assert float(a["energy_final"]) < float(a["energy_initial"])
        for p, q in zip(stepped.parameters(), fast.parameters()):
            assert_close(q, p, atol=ROUNDOFF, what=f"batch {batch}")


def test_fast_cycle_gradients_are_the_local_rule():
    """pc_cycle's gradients equal local_gradients() of the stepped state (the outer
    product of the gated error and the pre-synaptic value)."""
    eng, _ = _pair([5, 7, 3], ["identity", "tanh", "identity"])
    x0, target = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    s = eng.init_state(x0, target)
    eng.infer(s)
    expected = eng.local_gradients(s)
    grads, _, e1 = pc_cycle(eng.maps, eng.activations, eng.prec, eng.network.clamped("train"),
                            1.0, eng.dt, eng.tau_x, eng.n_steps, x0, target)
    assert_close(e1, eng.energy(s).mean(), atol=ROUNDOFF)
    for (gw, gb), (ew, eb) in zip(pairs(grads), pairs(expected)):
        assert_close(gw, ew, atol=ROUNDOFF)
        assert_close(gb, eb, atol=ROUNDOFF)


def test_compiled_cycle_matches_eager():
    """torch.compile'd cycle (float32) tracks the eager one to float32 round-off over
    several batches, including a smaller last batch (a second graph)."""
    eager, compiled = _pair([12, 16, 16, 4], ["identity", "gelu", "tanh", "identity"],
                            steps=5, dtype=torch.float32, compile=True)
    opts = [torch.optim.AdamW(e.parameters(), lr=1e-3) for e in (eager, compiled)]
    for rows in (8, 8, 3):
        x0, target = torch.randn(rows, 12), torch.randn(rows, 4)
        a = eager.train_batch(x0, target, opts[0])
        b = compiled.train_batch(x0, target, opts[1])
        assert_close(b["energy_final"], a["energy_final"], atol=1e-5, rtol=1e-5)
    for p, q in zip(eager.parameters(), compiled.parameters()):
        assert_close(q, p, atol=1e-5)


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_fast_cycle_within_the_wavefront(steps):
    """With T < L the fast path skips the products of exactly-zero errors, and still
    returns what stepping every product gives: the energies and gradients agree, and a
    projection the errors have not reached gets a gradient of exactly zero."""
    stepped, fast = _pair([6, 9, 8, 7, 5], ["identity", "tanh", "gelu", "sigmoid", "identity"],
                          steps=steps)
    x0 = torch.randn(4, 6, dtype=torch.float64)
    target = torch.rand(4, 5, dtype=torch.float64)
    s = stepped.init_state(x0, target)
    stepped.infer(s)
    expected = stepped.local_gradients(s)
    grads, _, e1 = pc_cycle(fast.maps, fast.activations, fast.prec,
                            fast.network.clamped("train"), 1.0, fast.dt, fast.tau_x,
                            steps, x0, target)
    assert_close(e1, stepped.energy(s).mean(), atol=ROUNDOFF)
    for l, ((gw, gb), (ew, eb)) in enumerate(zip(pairs(grads), pairs(expected)), start=1):
        assert_close(gw, ew, atol=ROUNDOFF, what=f"W_{l}")
        assert_close(gb, eb, atol=ROUNDOFF, what=f"b_{l}")
        reached = l >= 4 - steps  # eps_4 at the start, one layer further down per step
        assert bool(gw.abs().max() > 0) == reached, f"W_{l} after {steps} steps"


def test_eager_cycle_kept_across_batches_follows_the_engine():
    """The eager fast path keeps its dynamics between cycles; it still follows every
    weight update, a change of the step count or of dt, and replaced maps."""
    stepped, fast = _pair([6, 9, 8, 5], ["identity", "gelu", "tanh", "identity"], steps=4)
    opts = [torch.optim.SGD(e.parameters(), lr=0.1) for e in (stepped, fast)]
    for batch, (steps, dt) in enumerate([(4, 1e-3), (4, 1e-3), (6, 1e-3), (6, 2e-3)]):
        for e in (stepped, fast):
            e.n_steps, e.dt = steps, dt
        if batch == 3:  # replaced maps (as the counting tests do): the new ones are used
            fast.maps = list(fast.maps)
        x0, target = torch.randn(4, 6, dtype=torch.float64), torch.rand(4, 5, dtype=torch.float64)
        a = stepped.train_batch(x0, target, opts[0], hooks=[_Watch()])
        b = fast.train_batch(x0, target, opts[1])
        assert a["steps"] == b["steps"] == steps
        assert_close(b["energy_final"], a["energy_final"], atol=ROUNDOFF, what=f"batch {batch}")
        for p, q in zip(stepped.parameters(), fast.parameters()):
            assert_close(q, p, atol=ROUNDOFF, what=f"batch {batch}")
