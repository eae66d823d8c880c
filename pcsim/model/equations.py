r"""The predictive-coding equations, written once (SPEC sections 1-2).

Notation (used unchanged in code, YAML keys, HDF5 paths and plot labels)
-----------------------------------------------------------------------
=========  ==============================================================
``l``      layer index, ``0..L``; layer ``l`` is predicted from ``l-1``
``x``      value neurons ``x_l`` (n_l per layer)
``eps``    error neurons ``eps_l`` (layers ``l >= 1``)
``a``      pre-activation ``a_l = W_l x_{l-1} + b_l``
``mu``     prediction ``mu_l = f_l(a_l)``
``f``      activation; ``f_prime`` its derivative
``g``      gated error ``g_l = f_prime_l(a_l) * eps_l`` (what error neurons send down)
``W, b``   weights (``n_l x n_{l-1}``, or a kernel) and bias of projection ``l``
``prec``   precision ``prec_l = 1 / sigma_l^2``; ``prec_0`` the prior on a free ``x_0``
``tau_x``  value-neuron time constant (s); ``tau_eps`` error neurons; ``tau_w`` synapses
``log_sigma2``  a learned log-variance ``s = ln sigma2`` (``prec = exp(-s)``); ``tau_prec``
           its time constant (s), ``sigma2_min`` its floor (SPEC 2.4)
``E``      free energy ``sum_l 0.5 prec_l ||x_l - mu_l||^2 - 0.5 n_l ln prec_l``
=========  ==============================================================

The dynamics (Bogacz 2017, J. Math. Psychol. 76:198; Whittington & Bogacz 2017,
Neural Comput. 29:1229; arXiv 2508.08762 with its indices reversed, see SPEC 1)::

    tau_x   dx_l/dt   = -eps_l + W_{l+1}^T g_{l+1}                 (= -dE/dx_l)
    tau_eps deps_l/dt = prec_l (x_l - mu_l) - eps_l                (tau_eps = 0: eps at its fixed point)
    tau_w   dW_l/dt   = g_l x_{l-1}^T - lambda W_l                 (= -dE/dW_l - decay, batch mean)
    tau_w   db_l/dt   = g_l
    tau_prec ds_l/dt  = 0.5 (<(x_l - mu_l)^2> exp(-s_l) - 1)      (learned log-variance, SPEC 2.4)

where ``s_l = ln sigma2_l`` (``prec_l = exp(-s_l)``) and ``<.>`` is the mean over the batch
and the neurons that share the variance: ``-dE/ds_l`` per such neuron (the derivation, and
why log-variance, in :mod:`pcsim.model.precision`).

A free bottom layer (generative mode) carries the Gaussian prior ``0.5 prec_0 ||x_0||^2``,
which enters ``dx_0/dt`` exactly as an error ``eps_0 = prec_0 x_0`` would.

``W x`` is the projection's forward map and ``W^T g`` its adjoint; nothing here assumes a
dense matrix. The weight-gradient map (``g x^T`` for a dense projection) also belongs to
the projection. Every function below works on numpy arrays and torch tensors alike; the
brian2 strings state the same laws for the brian2 engine, and tests check the two agree.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "VALUE_EQS", "ERROR_EQS", "ERROR_FIXED_EQS", "WEIGHT_EQS", "BIAS_EQS",
    "error_fixed_point", "error_rhs", "gated_error", "value_rhs", "weight_rhs", "bias_rhs",
    "layer_energy", "prior_energy", "per_sample_sum", "log_prec_sum", "prediction",
    "pooled_gate", "PRECISION_EQS", "PREC_FROM_LOG_VARIANCE", "log_variance_rate",
]

#: Value neuron, layer l: its own error against the feedback from the layer above.
VALUE_EQS = "dx/dt = (-eps + I_fb) / tau_x : 1"  # I_fb = W_{l+1}^T (f'(a_{l+1}) * eps_{l+1})
#: Error neuron, layer l: leaky estimate of eps_l = prec_l * (x_l - f(a_l)).
ERROR_EQS = "deps/dt = (prec * (x - mu) - eps) / tau_eps : 1"  # mu = f(a), a = W_l x_{l-1} + b_l
#: Error neuron with tau_eps = 0: it sits at its fixed point at every instant.
ERROR_FIXED_EQS = "eps = prec * (x - mu) : 1"
#: Plasticity of W_l: pre = value neuron of layer l-1, post = error neuron of layer l.
WEIGHT_EQS = "dw/dt = (g_post * x_pre - lambda_w * w) / tau_w : 1"  # g = f'(a) * eps
#: Plasticity of b_l: the post-synaptic gated error alone.
BIAS_EQS = "db/dt = g / tau_w : 1"
#: A learned log-variance of error neuron i, layer l (SPEC 2.4; one variance per neuron;
#: shared variances average the squared error over the neurons that share them).
PRECISION_EQS = "dlog_sigma2/dt = 0.5 * ((x - mu)**2 * exp(-log_sigma2) - 1) / tau_prec : 1"
#: The precision a learned log-variance gives the error neuron (ERROR_EQS's ``prec``).
PREC_FROM_LOG_VARIANCE = "prec = exp(-log_sigma2) : 1"


def error_fixed_point(x, mu, prec):
    """Return ``eps = prec * (x - mu)``, the error neuron's fixed point (SPEC 1)."""
    return prec * (x - mu)


def error_rhs(eps, x, mu, prec, tau_eps):
    """Return ``deps/dt = (prec (x - mu) - eps) / tau_eps`` (SPEC 2.1), in 1/s."""
    return (error_fixed_point(x, mu, prec) - eps) / tau_eps


def gated_error(eps, f_prime_a):
    """Return ``g = f'(a) * eps``, the signal error neurons send through ``W^T``."""
    return f_prime_a * eps


def value_rhs(eps, feedback, tau_x):
    """Return ``dx/dt = (-eps + W_{l+1}^T g_{l+1}) / tau_x`` (SPEC 2.1).

    ``feedback`` is the adjoint of the projection above applied to its gated error, or
    ``0`` for the top layer.
    """
    return (feedback - eps) / tau_x


def weight_rhs(local_grad, w, weight_decay, tau_w):
    """Return ``dW/dt = (g x^T - lambda W) / tau_w`` (SPEC 2.2).

    ``local_grad`` is ``-dE/dW`` from the projection's weight-gradient map, batch mean.
    """
    return (local_grad - weight_decay * w) / tau_w


def bias_rhs(local_grad, tau_w):
    """Return ``db/dt = g / tau_w`` (SPEC 2.2); ``local_grad`` is the batch mean of ``g``."""
    return local_grad / tau_w


def log_variance_rate(mean_sq_error, log_sigma2):
    """Return ``ds/dt * tau_prec = 0.5 (<(x - mu)^2> exp(-s) - 1)`` (SPEC 2.4, PRECISION_EQS),
    ``-dE/ds`` per neuron sharing the variance ``exp(s)``.

    ``mean_sq_error`` is ``<(x - mu)^2>`` over the batch and those neurons, in the shape
    of ``log_sigma2``. At ``sigma2 = <(x - mu)^2>`` the rate is zero; it is never below
    ``-0.5``.

    Examples
    --------
    >>> log_variance_rate(np.array([0.5, 2.0]), np.log([0.5, 1.0]))
    array([0. , 0.5])
    """
    decay = log_sigma2.neg().exp() if hasattr(log_sigma2, "neg") else np.exp(-log_sigma2)
    return 0.5 * (mean_sq_error * decay - 1.0)


def per_sample_sum(v):
    """Sum ``v`` of shape ``(batch, *layer_shape)`` over every neuron of the layer."""
    return (v if v.ndim == 2 else v.reshape(v.shape[0], -1)).sum(-1)


def log_prec_sum(prec, n):
    """``sum_i ln prec_i`` over the ``n`` neurons of a layer, for a scalar precision or
    one that broadcasts over the layer (per neuron, or per channel of ``(C, H, W)``)."""
    if isinstance(prec, (int, float)):
        return n * math.log(prec)
    if hasattr(prec, "numel"):  # torch
        return prec.log().sum() * (n // prec.numel())
    return np.log(prec).sum() * (n // np.size(prec))


def prediction(f_a, pool=None):
    """Return ``(mu, route)`` with ``mu = P(f(a))`` (SPEC 1): the activation, then the
    projection's pooling ``P`` (None: the identity). ``route`` is what the pooling's
    adjoint needs of this evaluation (max pooling: the winners), or None."""
    return (f_a, None) if pool is None else pool.forward(f_a)


def pooled_gate(eps, f_prime_a, pool=None, route=None):
    """Return ``g = f'(a) * P^T(eps)`` (SPEC 1): the error brought back through the
    pooling's adjoint, then gated (``f_prime_a`` None: the identity activation)."""
    back = eps if pool is None else pool.adjoint(eps, route)
    return back if f_prime_a is None else gated_error(back, f_prime_a)


def layer_energy(x, mu, prec, n):
    """Return layer ``l``'s free energy per sample,
    ``0.5 sum_i prec_i (x_i - mu_i)^2 - 0.5 sum_i ln prec_i`` over its ``n`` neurons.

    ``x`` and ``mu`` have shape ``(batch, *layer_shape)``; ``prec`` is a number or an
    array that broadcasts over the layer. The result has shape ``(batch,)``.
    """
    diff = x - mu
    if isinstance(prec, (int, float)):
        return 0.5 * prec * per_sample_sum(diff * diff) - 0.5 * n * math.log(prec)
    return 0.5 * per_sample_sum(prec * diff * diff) - 0.5 * log_prec_sum(prec, n)


def prior_energy(x0, prec_0):
    """Return the prior ``0.5 prec_0 ||x_0||^2`` on a free bottom layer, per sample."""
    return 0.5 * prec_0 * per_sample_sum(x0 * x0)
