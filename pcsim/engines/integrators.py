"""Time integration of the dynamics, written once for every engine path."""

from __future__ import annotations

__all__ = ["euler"]


def euler(state, dt: float, rhs):
    """One forward-Euler step ``state + dt * rhs`` (SPEC 2; the discrete PC update of
    SPEC 2.3 is this step with ``tau_eps = 0`` and ``tau_w = inf``)."""
    return state + dt * rhs
