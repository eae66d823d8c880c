"""Closed-form oracles for single populations (SPEC 2.1) and the activation registry."""

import math

import numpy as np
import pytest
import torch

from pcsim.config.schema import ACTIVATIONS as SCHEMA_ACTIVATIONS
from pcsim.engines.torch.engine import TorchEngine
from pcsim.model import ACTIVATIONS
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network


def test_activation_registry_matches_schema():
    """The YAML schema lists exactly the registered activations (else a valid config
    could name an activation the model does not have)."""
    assert set(SCHEMA_ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_f_prime_is_derivative_of_f(name):
    """f_prime equals the central finite difference of f, on numpy and torch alike."""
    act = ACTIVATIONS[name]
    a = np.linspace(-3, 3, 61) + 0.013  # avoid the kink of relu at 0
    h = 1e-6
    numeric = (act.f(a + h, np) - act.f(a - h, np)) / (2 * h)
    assert_close(act.f_prime(a, np), numeric, atol=1e-8)
    assert_close(act.f_prime(torch.tensor(a), torch), act.f_prime(a, np), atol=ROUNDOFF)


def test_lone_value_neuron_relaxes_exponentially():
    """With x_0 clamped and the top layer free, dx/dt = -prec (x - mu)/tau_x, so Euler gives
    x_k = mu + (x0 - mu)(1 - prec dt/tau_x)^k exactly, and the ODE exp(-prec t/tau_x).
    A wrong sign or a missing precision in value_rhs breaks both."""
    net = make_network([3, 4], ["identity", "identity"], prec=[1.0, 2.5])
    dyn = make_dynamics(tau_x=10e-3, dt=1e-5)
    eng = TorchEngine(net, dyn, dtype=torch.float64)
    x_in = torch.randn(2, 3, dtype=torch.float64)
    s = eng.init_state(x_in, phase="test")
    mu = s.mu[1].clone()
    x_start = mu + torch.randn(2, 4, dtype=torch.float64)
    eng.assign(s, 1, x=x_start)
    n = 1000  # t = 10 ms = tau_x
    eng.infer(s, n)
    prec, eta = 2.5, 1e-5 / 10e-3
    assert_close(s.x[1], mu + (x_start - mu) * (1 - prec * eta) ** n, atol=ROUNDOFF)
    exact = mu + (x_start - mu) * math.exp(-prec * n * 1e-5 / 10e-3)
    # Euler's global error is about 0.5 * (prec eta)^2 n |x0 - mu| at this step size
    assert_close(s.x[1], exact, atol=0.5 * (prec * eta) ** 2 * n * 5 * 2)


def test_leaky_error_neuron_relaxes_to_fixed_point():
    """With x and mu clamped, tau_eps deps/dt = prec (x - mu) - eps: from eps = 0, Euler
    gives eps_k = fix (1 - (1 - dt/tau_eps)^k) with fix = prec (x - mu)."""
    net = make_network([3, 4], ["identity", "tanh"], prec=[1.0, 0.7])
    dyn = make_dynamics(tau_x=10e-3, tau_eps=2e-3, dt=1e-5)
    eng = TorchEngine(net, dyn, dtype=torch.float64)
    x_in, target = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    s = eng.init_state(x_in, target, phase="train")
    fix = 0.7 * (target - torch.tanh(s.a[1]))
    assert_close(s.eps[1], fix, atol=ROUNDOFF)  # starts at its fixed point
    eng.assign(s, 1, eps=torch.zeros(5, 4))
    k = 400
    eng.infer(s, k)
    assert_close(s.eps[1], fix * (1 - (1 - 1e-5 / 2e-3) ** k), atol=ROUNDOFF)
    assert_close(s.x[1], target, atol=0)  # clamped layers do not move


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_value_and_prime_equals_f_and_f_prime(name):
    """The shared-work form the fast path uses returns exactly f and f_prime."""
    act = ACTIVATIONS[name]
    a = torch.linspace(-4, 4, 81, dtype=torch.float64) + 0.013
    value, prime = act.value_and_prime(a, torch)
    assert_close(value, act.f(a, torch), atol=ROUNDOFF)
    assert_close(prime, act.f_prime(a, torch), atol=ROUNDOFF)


def test_gelu_is_the_tanh_form_of_torch_and_jax():
    """gelu is GELU's tanh approximation (jax.nn.gelu's default), checked against torch's
    independent implementation."""
    a = torch.linspace(-6, 6, 241, dtype=torch.float64)
    expected = torch.nn.functional.gelu(a, approximate="tanh")
    assert_close(ACTIVATIONS["gelu"].f(a, torch), expected, atol=ROUNDOFF)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_autograd_of_f_is_finite_for_large_inputs(name):
    """The BP baseline differentiates ``f`` by autograd. In float32 ``exp(-u)`` overflows
    for ``u < -88.7`` (a GELU input below about -10.4), which made the logistic forms'
    derivative ``inf * 0 = nan`` (seen at epoch 2 of the CIFAR-10 BP run); it is finite
    now, equals f_prime there (0 to float32 resolution), and the values are unchanged."""
    act = ACTIVATIONS[name]
    a = torch.tensor([-1e4, -200.0, -50.0, -12.0, -10.5, 10.5, 12.0, 50.0, 200.0],
                     dtype=torch.float32, requires_grad=True)
    act.f(a, torch).sum().backward()
    assert bool(torch.isfinite(a.grad).all()), a.grad
    assert_close(a.grad, act.f_prime(a.detach(), torch), atol=1e-6)
    # below the bound the computation is the one it was, bit for bit
    b = torch.linspace(-9, 9, 181, dtype=torch.float32)
    if name == "sigmoid":
        assert torch.equal(act.f(b, torch), 1.0 / (1.0 + torch.exp(-b)))
    if name == "gelu":
        u = 2 * 0.7978845608028654 * (b + 0.044715 * b * b * b)
        assert torch.equal(act.f(b, torch), b * (1.0 / (1.0 + torch.exp(-u))))
