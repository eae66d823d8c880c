"""Activation functions ``f`` and their derivatives ``f_prime``, written once.

Each function takes the array namespace ``xp`` (``numpy`` or ``torch``) so the same
definition serves every engine and the numpy references in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]

_LEAK = 0.01  # leaky_relu slope for a < 0 (PyTorch's default)


@dataclass(frozen=True)
class Activation:
    """A pointwise nonlinearity ``f`` with its derivative ``f_prime``.

    Parameters
    ----------
    name : str
        Registry name, as written in ``network.layers[*].activation``.
    f, f_prime : callable
        ``f(a, xp)`` and ``f_prime(a, xp)`` on an array ``a`` of namespace ``xp``.
    brian2 : str
        ``f`` as a brian2 expression of ``a`` (for the brian2 engine).
    brian2_prime : str
        ``f_prime`` as a brian2 expression of ``a``.
    """

    name: str
    f: Callable[[Any, Any], Any]
    f_prime: Callable[[Any, Any], Any]
    brian2: str
    brian2_prime: str
    both: Callable[[Any, Any], Any] | None = None

    def value_and_prime(self, a, xp):
        """Return ``(f(a), f_prime(a))``, sharing the work where the two have it in common
        (``tanh``: one ``tanh`` instead of two)."""
        if self.both is not None:
            return self.both(a, xp)
        return self.f(a, xp), self.f_prime(a, xp)

    @property
    def is_identity(self) -> bool:
        """True when ``f_prime`` is 1 everywhere (engines may skip the gating product)."""
        return self.name == "identity"


def _with_prime(value, prime_of_value):
    return value, prime_of_value(value)


#: Bound on the exponent of the logistic forms: ``exp(80)`` is finite in float32, and
#: ``1 / (1 + exp(-u))`` is below 2e-35 there. Without it ``exp`` overflows to ``inf``
#: for ``u < -88.7`` (a GELU input below about -10.4): the value is still 0, but
#: autograd's derivative is ``inf * 0 = nan`` (the BP baseline on CIFAR-10 hit it).
#: The bound is exact below it, so every value it does not reach keeps its bits.
_EXP_MAX = 80.0


def _in_place(t) -> bool:
    """True for a torch tensor outside autograd (the BP baseline differentiates these
    functions, and autograd needs the operands that in-place operations overwrite)."""
    return hasattr(t, "mul_") and not t.requires_grad


def _logistic_of_negated(v, xp):
    """``1 / (1 + exp(v))``, the logistic of ``-v``, with the exponent bounded (in place
    on a torch tensor: ``v`` is a temporary of the caller's; the same operations in the
    same order as the out-of-place form, so the same bits, without its temporaries)."""
    if _in_place(v):  # (no bound needed: exp overflows to inf, and 1 / (1 + inf) is 0)
        return v.exp_().add_(1.0).reciprocal_()
    v = v.clamp(max=_EXP_MAX) if hasattr(v, "clamp") else xp.minimum(v, _EXP_MAX)
    return 1.0 / (1.0 + xp.exp(v))


def _sigmoid(a, xp):
    return _logistic_of_negated(-a, xp)


_GELU_C = 0.7978845608028654  # sqrt(2 / pi)
_GELU_K = 0.044715


def _gelu(a, xp):
    """GELU, tanh form (jax.nn.gelu's default, torch's ``approximate="tanh"``), written
    with ``0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u))``: the same function, and one ``exp`` is
    several times cheaper than one ``tanh`` in vectorised CPU code."""
    return a * _gelu_gate(a, xp)


def _gelu_gate(a, xp):
    if _in_place(a):  # torch without autograd: in place on one temporary, the same bits
        u = a * _GELU_K
        return _logistic_of_negated(u.mul_(a).mul_(a).add_(a).mul_(-2 * _GELU_C), xp)
    return _logistic_of_negated(-2 * _GELU_C * (a + _GELU_K * a * a * a), xp)


def _gelu_prime(a, xp):
    return _gelu_both(a, xp)[1]


def _gelu_both(a, xp):
    s = _gelu_gate(a, xp)  # = 0.5 (1 + t), so 0.5 (1 - t^2) = 2 s (1 - s)
    if _in_place(a):  # torch without autograd: the expression below on two temporaries
        prime = (a * 2).mul_(s).mul_(1 - s).mul_(_GELU_C)
        slope = (a * (3 * _GELU_K)).mul_(a).add_(1)
        return a * s, prime.mul_(slope).add_(s)
    return a * s, s + 2 * a * s * (1 - s) * _GELU_C * (1 + 3 * _GELU_K * a * a)


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation("identity", lambda a, xp: a, lambda a, xp: a * 0 + 1, "a", "1"),
    "tanh": Activation("tanh", lambda a, xp: xp.tanh(a),
                       lambda a, xp: 1 - xp.tanh(a) ** 2, "tanh(a)", "1 - tanh(a)**2",
                       both=lambda a, xp: _with_prime(xp.tanh(a), lambda t: 1 - t * t)),
    "relu": Activation("relu", lambda a, xp: a * (a > 0), lambda a, xp: (a > 0) * 1.0,
                       "a * int(a > 0)", "1.0 * int(a > 0)"),
    "sigmoid": Activation("sigmoid", _sigmoid,
                          lambda a, xp: _sigmoid(a, xp) * (1 - _sigmoid(a, xp)),
                          "1 / (1 + exp(-a))", "(1 / (1 + exp(-a))) * (1 - 1 / (1 + exp(-a)))",
                          both=lambda a, xp: _with_prime(_sigmoid(a, xp), lambda s: s * (1 - s))),
    "leaky_relu": Activation("leaky_relu", lambda a, xp: xp.where(a > 0, a, _LEAK * a),
                             lambda a, xp: xp.where(a > 0, a * 0 + 1, a * 0 + _LEAK),
                             f"a * int(a > 0) + {_LEAK} * a * int(a <= 0)",
                             f"1.0 * int(a > 0) + {_LEAK} * int(a <= 0)"),
    "gelu": Activation(
        "gelu", _gelu, _gelu_prime,
        brian2=f"0.5 * a * (1 + tanh({_GELU_C!r} * (a + {_GELU_K!r} * a**3)))",
        brian2_prime=(f"0.5 * (1 + tanh({_GELU_C!r} * (a + {_GELU_K!r} * a**3))) + 0.5 * a * "
                      f"(1 - tanh({_GELU_C!r} * (a + {_GELU_K!r} * a**3))**2) * {_GELU_C!r} * "
                      f"(1 + {3 * _GELU_K!r} * a**2)"),
        both=_gelu_both),
}


def get_activation(name: str) -> Activation:
    """Return the registered activation ``name``.

    Raises
    ------
    KeyError
        Listing the valid names.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None
