"""The torch engine's fast path: one discrete PC training cycle as one function of tensors.

:class:`~pcsim.engines.torch.engine.TorchEngine` steps a :class:`PCState` through
methods that can count ops, send events and call hooks. When nothing of that is asked
for (dense transmission, no op recorder, no hooks) and the cycle is the discrete update
of SPEC 2.3 (``tau_eps = 0``, ``tau_w = inf``), the whole cycle -- feedforward start,
``T`` synchronous Euler steps, energies and the local weight gradients -- is this one
function. It holds no equations of its own: the right-hand sides come from
:mod:`pcsim.model.equations` and the maps' forward, adjoint and weight-gradient methods,
exactly as in :meth:`TorchEngine.step`, and a test checks that both paths agree to
float64 round-off.

Being a pure function of tensors, it can be handed to ``torch.compile``. Inductor fuses
each layer's elementwise work into one loop and keeps the GEMMs in the BLAS. The compiled
engine also puts the optimizer's update in the same graph, guarded by the finiteness of
the energy (:class:`pcsim.engines.torch.optim.GraphUpdate`).
"""

from __future__ import annotations

import torch

from pcsim.model import equations as eq
from pcsim.model.costs import errors_after_feedforward, inference_wavefront

__all__ = ["free_energy", "pc_cycle"]


def free_energy(x, mu, prec, clamped, prec_0):
    """Return ``E`` per sample (SPEC 1): every layer's energy, plus the prior of a free
    ``x_0``. Lists ``x``, ``mu``, ``prec`` indexed by layer ``l = 0..L``."""
    total = 0.0 if clamped[0] else eq.prior_energy(x[0], prec_0)
    for l in range(1, len(x)):
        total = total + eq.layer_energy(x[l], mu[l], prec[l], x[l].shape[1])
    return total


def pc_cycle(maps, activations, prec, clamped, prec_0, dt, tau_x, n_steps, x0, target):
    """Run one PC cycle on a batch and return the local gradients and the energies.

    Parameters
    ----------
    maps : list
        ``maps[l]`` is projection ``l`` (``maps[0]`` unused).
    activations, prec : list
        Per layer ``l = 0..L``.
    clamped : tuple of bool
        Clamping pattern, per layer.
    prec_0 : float
        Prior precision of a free ``x_0``.
    dt, tau_x : float
        Euler step and value-neuron time constant (``eta_x = dt / tau_x``).
    n_steps : int
        Inference steps ``T``.
    x0, target : tensor
        Bottom layer (input, or initial latent) and clamped top layer (or None).

    Returns
    -------
    grads : list of (tensor, tensor)
        ``(-dE/dW_l, -dE/db_l)`` batch means for ``l = 1..L``.
    energy_initial, energy_final : tensor
        Batch-mean free energy after the feedforward start and after inference.

    Notes
    -----
    The steps follow the inference wavefront (:func:`pcsim.model.costs.inference_wavefront`):
    after the feedforward start the hidden errors are exactly zero and become nonzero one
    layer per step, so for the first ``L - 1`` steps the products of exactly-zero errors
    and the predictions from unmoved values are not computed. The schedule depends only on
    the clamping pattern and ``T``, so it is fixed while tracing, and every tensor the
    cycle returns is what the full schedule (``TorchEngine.step``) computes.
    """
    L = len(activations) - 1
    # W is fixed for the cycle: a map that runs every step (its input is free) gets W^T
    # row-major once (DenseMap.frozen); the clamped input's product runs once anyway
    maps = [None] + [m if clamped[l - 1] else m.frozen() for l, m in enumerate(maps) if l]
    x = [x0] + [None] * L
    mu, f_prime_a = [None] * (L + 1), [None] * (L + 1)
    eps, g = [None] * (L + 1), [None] * (L + 1)  # None: exactly zero

    def predict(l):
        a = maps[l].forward(x[l - 1])
        act = activations[l]
        if act.is_identity:
            mu[l], f_prime_a[l] = a, None
        else:
            mu[l], f_prime_a[l] = act.value_and_prime(a, torch)

    def error(l):
        eps[l] = (eq.error_fixed_point(x[0], 0.0, prec_0) if l == 0 else
                  eq.error_fixed_point(x[l], mu[l], prec[l]))
        if l > 0:
            g[l] = eps[l] if f_prime_a[l] is None else eq.gated_error(eps[l], f_prime_a[l])

    def energy():
        return free_energy(x, mu, prec, clamped, prec_0).mean()

    for l in range(1, L + 1):  # feedforward start x_l = mu_l
        predict(l)
        x[l] = mu[l]
    if clamped[L]:
        x[L] = target
    for l, in_error in enumerate(errors_after_feedforward(clamped)):
        if in_error:
            error(l)
    energy_initial = energy()
    for in_error, moved in inference_wavefront(clamped, n_steps):  # synchronous Euler steps
        new_x = list(x)
        for l in range(L + 1):
            if moved[l]:
                feedback = maps[l + 1].adjoint(g[l + 1]) if l < L and in_error[l + 1] else 0.0
                new_x[l] = x[l] + dt * eq.value_rhs(eps[l] if in_error[l] else 0.0, feedback,
                                                    tau_x)
        x = new_x
        for l in range(1, L + 1):
            if moved[l - 1]:
                predict(l)
        for l in range(L + 1):
            if moved[l] or (l > 0 and moved[l - 1]):
                error(l)
    grads = []
    for l in range(1, L + 1):
        gl = torch.zeros_like(mu[l]) if g[l] is None else g[l]  # T shorter than the depth
        grads.append((maps[l].weight_grad(gl, x[l - 1]), maps[l].bias_grad(gl)))
    return grads, energy_initial, energy()
