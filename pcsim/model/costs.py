"""Analytic dense operation counts of the clock-driven PC cycle (SPEC section 4).

These count what the torch engine's dense mode executes, per sample, so that they can be
checked against a count taken while it runs. A MAC is one multiply-accumulate (2 FLOPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pcsim.model.schedule import errors_after_feedforward, inference_wavefront

__all__ = ["DenseCost", "pc_train_cost", "feedforward_cost", "bp_train_cost",
           "errors_after_feedforward", "inference_wavefront"]


@dataclass(frozen=True)
class DenseCost:
    """Dense multiply-accumulates per sample, split by phase."""

    inference_macs: int
    learning_macs: int

    @property
    def macs(self) -> int:
        return self.inference_macs + self.learning_macs

    @property
    def flops(self) -> int:
        """Matrix FLOPs, ``2 * macs`` (elementwise neuron work is not included)."""
        return 2 * self.macs


def feedforward_cost(network) -> DenseCost:
    """Cost of one feedforward pass ``x_l = mu_l``: every forward map once."""
    return DenseCost(sum(p.macs for p in network.projections), 0)


def pc_train_cost(network, n_steps: int, tau_w: float = math.inf,
                  wavefront: bool = False) -> DenseCost:
    """Cost per sample of one training cycle of the PC engine in dense mode.

    1. Feedforward initialisation: every forward map once.
    2. Each of the ``n_steps`` Euler steps: the adjoint of projection ``l`` when its pre
       layer ``l - 1`` is free (feedback), then the forward map of projection ``l`` when
       its pre layer moved or its weights moved (finite ``tau_w``), plus the
       weight-gradient map of every projection when ``tau_w`` is finite.
    3. The learning step: the weight-gradient map of every projection once.

    With ``wavefront=True``, what the fast path executes instead (``tau_w = inf`` only):
    in step 2 the adjoint of projection ``l`` only while ``eps_l`` may be nonzero and its
    pre layer moves, and the forward map only when its pre layer moved
    (:func:`inference_wavefront`). From step ``L`` on both counts are equal.
    """
    free = [not c for c in network.clamped("train")]
    plastic = math.isfinite(tau_w)
    ff = feedforward_cost(network).inference_macs
    learn = sum(p.grad_macs for p in network.projections)
    if wavefront:
        if plastic:
            raise ValueError("the wavefront schedule is for the discrete update (tau_w = inf)")
        steps = 0
        for in_error, moved in inference_wavefront(network.clamped("train"), n_steps):
            for p in network.projections:
                pre_moved = moved[p.index - 1]
                steps += p.macs * (int(pre_moved and in_error[p.index]) + int(pre_moved))
        return DenseCost(ff + steps, learn)
    per_step = 0
    for p in network.projections:
        pre_free = free[p.index - 1]
        per_step += p.macs * (int(pre_free) + int(pre_free or plastic) + int(plastic))
    return DenseCost(ff + n_steps * per_step, learn)


def bp_train_cost(network) -> DenseCost:
    """Cost per sample of a backprop step: forward, backward through every adjoint but
    the first (the input needs no gradient), and every weight gradient."""
    fwd = feedforward_cost(network).inference_macs
    bwd = sum(p.macs for p in network.projections[1:])
    return DenseCost(fwd, bwd + sum(p.grad_macs for p in network.projections))
